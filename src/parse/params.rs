//! Parameters: `param act = relu` declares one with its default, `$act`
//! uses it in any value, and the command line sets it (`--set act=tanh`,
//! `cnnc compare --grid act=relu,tanh`).
//!
//! They are substituted here, before the layer and training tables read
//! the statements, so every argument takes a parameter without knowing of
//! them. An error those tables find in a substituted value points at the
//! `$act` that put it there, and `explain` adds where the value came from:
//! the default in the file, or the flag on the command line.

use super::ast::Param;
use super::syntax::{Argument, Statement, Value, ValueKind, Word, lone_value};
use crate::diag::{Diagnostic, Diagnostics, Span};

/// What command-line diagnostics name as their file.
pub const COMMAND_LINE: &str = "command line";

/// The flags that give parameters values, as the user wrote them; their
/// diagnostics point into `source`, the flags joined by spaces.
#[derive(Clone, Debug, Default)]
pub struct CommandLine {
    pub source: String,
    /// `--set NAME=VALUE`: one value.
    pub sets: Vec<Axis>,
    /// `--grid NAME=V1,V2,...`: a value per variant.
    pub grid: Vec<Axis>,
}

/// A parameter the command line names, and its values.
#[derive(Clone, Debug)]
pub struct Axis {
    pub name: Word,
    pub values: Vec<Value>,
    /// The whole flag: `--grid act=relu,tanh`.
    pub flag: Span,
}

/// The values of one variant: what `--set` says, and one value of each
/// axis of the grid.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The command line the spans point into.
    pub source: String,
    pub settings: Vec<Setting>,
}

#[derive(Clone, Debug)]
pub struct Setting {
    pub name: Word,
    pub value: Value,
    pub flag: Span,
}

impl CommandLine {
    /// Parses `--set` and `--grid` arguments (`NAME=VALUE`, and
    /// `NAME=VALUE,VALUE,...`; commas inside a list `[1, 2]` or a string
    /// do not split).
    pub fn parse(sets: &[String], grid: &[String]) -> Result<CommandLine, Diagnostics> {
        let flags: Vec<(&str, &String)> = sets
            .iter()
            .map(|s| ("--set", s))
            .chain(grid.iter().map(|g| ("--grid", g)))
            .collect();
        let mut line = CommandLine::default();
        let mut errors = Vec::new();
        for (flag, text) in flags {
            if !line.source.is_empty() {
                line.source.push(' ');
            }
            let start = line.source.len();
            line.source.push_str(flag);
            line.source.push(' ');
            let at = line.source.len();
            line.source.push_str(text);
            let span = Span::new(start, line.source.len());
            match axis(flag, text, at, span) {
                Ok(axis) if flag == "--set" => line.sets.push(axis),
                Ok(axis) => line.grid.push(axis),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let all: Vec<&Axis> = line.sets.iter().chain(&line.grid).collect();
        for (i, a) in all.iter().enumerate() {
            if let Some(first) = all[..i].iter().find(|b| b.name.text == a.name.text) {
                errors.push(
                    Diagnostic::error(a.name.span, format!("`{}` is given twice", a.name.text))
                        .label("second time")
                        .related(first.name.span, "first time")
                        .help("give each parameter once: one `--set`, or one `--grid` with all its values"),
                );
            }
        }
        if errors.is_empty() {
            Ok(line)
        } else {
            Err(Diagnostics {
                file: COMMAND_LINE.into(),
                source: line.source,
                errors,
            })
        }
    }

    /// Every combination of the grid's values, the first `--grid` varying
    /// slowest, each with the `--set` values; one variant without a grid.
    pub fn variants(&self) -> Vec<Overrides> {
        let mut variants = vec![Vec::new()];
        for axis in &self.grid {
            variants = variants
                .into_iter()
                .flat_map(|chosen: Vec<Setting>| {
                    axis.values.iter().map(move |v| {
                        let mut chosen = chosen.clone();
                        chosen.push(Setting {
                            name: axis.name.clone(),
                            value: v.clone(),
                            flag: axis.flag,
                        });
                        chosen
                    })
                })
                .collect();
        }
        variants
            .into_iter()
            .map(|grid| Overrides {
                source: self.source.clone(),
                settings: self
                    .sets
                    .iter()
                    .map(|s| Setting {
                        name: s.name.clone(),
                        value: s.values[0].clone(),
                        flag: s.flag,
                    })
                    .chain(grid)
                    .collect(),
            })
            .collect()
    }
}

/// One flag's `NAME=VALUE[,VALUE...]`, `text` starting at `at` in the
/// command line.
fn axis(flag: &str, text: &str, at: usize, span: Span) -> Result<Axis, Vec<Diagnostic>> {
    let example = match flag {
        "--set" => "e.g. `--set act=tanh`",
        _ => "e.g. `--grid act=relu,sigmoid,tanh`",
    };
    let Some((name, values)) = text.split_once('=') else {
        return Err(vec![
            Diagnostic::error(Span::new(at, at + text.len()), format!("`{flag}` takes NAME=VALUE"))
                .label("no `=`")
                .help(format!("name the parameter and its value, {example}")),
        ]);
    };
    let name_span = Span::new(at, at + name.len());
    if !valid_name(name) {
        let e = Diagnostic::error(name_span, format!("`{name}` is not a parameter name")).label("not a name");
        return Err(vec![match name.strip_prefix('$') {
            Some(bare) if valid_name(bare) => e.help(format!("write the name without `$`: `{flag} {bare}=...`")),
            _ => e.help(format!("name a parameter the model declares, {example}")),
        }]);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let first = at + name.len() + 1;
    let pieces = if flag == "--set" {
        vec![(0, values)]
    } else {
        split_top_level(values)
    };
    for (offset, piece) in pieces {
        let start = first + offset;
        let shift = |d: Diagnostic| shifted(d, start);
        if piece.trim().is_empty() {
            let what = if values.trim().is_empty() {
                "has no value"
            } else {
                "has an empty value"
            };
            errors.push(
                Diagnostic::error(
                    Span::new(start, start + piece.len()),
                    format!("`{flag} {name}=` {what}"),
                )
                .label("expected a value")
                .help(format!("give the value after `=`, {example}")),
            );
            continue;
        }
        match lone_value(piece) {
            Ok(v) => out.push(shift_value(v, start)),
            Err(e) => errors.push(shift(e)),
        }
    }
    for (i, v) in out.iter().enumerate() {
        if let Some(first) = out[..i].iter().find(|w| w.kind.text() == v.kind.text()) {
            errors.push(
                Diagnostic::error(v.span, format!("`{}` is in the grid twice", v.kind.text()))
                    .label("second time")
                    .related(first.span, "first time")
                    .help("list each value once"),
            );
        }
        if let ValueKind::Param(p) = &v.kind {
            errors.push(
                Diagnostic::error(
                    v.span,
                    format!("a value on the command line cannot be another parameter (`${p}`)"),
                )
                .label("a parameter")
                .help(format!("give the value itself, {example}")),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Axis {
        name: Word {
            text: name.to_string(),
            span: name_span,
        },
        values: out,
        flag: span,
    })
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// `relu,[1, 2],"a,b"` as its three values, with their byte offsets.
fn split_top_level(text: &str) -> Vec<(usize, &str)> {
    let mut pieces = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                pieces.push((start, &text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push((start, &text[start..]));
    pieces
}

fn shifted(mut d: Diagnostic, by: usize) -> Diagnostic {
    let shift = |s: Span| Span::new(s.start + by, s.end + by);
    d.span = shift(d.span);
    for (span, _) in &mut d.related {
        *span = shift(*span);
    }
    d
}

fn shift_value(v: Value, by: usize) -> Value {
    respan(v, &|s| Span::new(s.start + by, s.end + by))
}

fn respan(v: Value, to: &dyn Fn(Span) -> Span) -> Value {
    let kind = match v.kind {
        ValueKind::List(items) => ValueKind::List(items.into_iter().map(|i| respan(i, to)).collect()),
        ValueKind::Call(name, args) => ValueKind::Call(
            name,
            args.into_iter()
                .map(|a| Argument {
                    key: a.key.map(|k| Word { span: to(k.span), ..k }),
                    value: respan(a.value, to),
                })
                .collect(),
        ),
        other => other,
    };
    Value { kind, span: to(v.span) }
}

/// The statements with every declared parameter substituted and the
/// `param` statements taken out, and the parameters. Mistakes in the file
/// go to `errors`; a mistake of the command line (a name the file does not
/// declare) is returned at once, pointing into the command line.
pub(super) fn resolve(
    file: &str,
    statements: Vec<Statement>,
    overrides: &Overrides,
    errors: &mut Vec<Diagnostic>,
) -> Result<(Vec<Statement>, Vec<Param>), Diagnostics> {
    let mut declared: Vec<Declared> = Vec::new();
    let mut rest = Vec::new();
    for s in statements {
        if s.keyword.text == "param" && s.block.is_none() {
            declare(&s, &mut declared, errors);
        } else {
            rest.push(s);
        }
    }
    let unknown: Vec<Diagnostic> = overrides
        .settings
        .iter()
        .filter(|s| !declared.iter().any(|d| d.name.text == s.name.text))
        .map(|s| unknown_setting(file, s, &declared))
        .collect();
    if !unknown.is_empty() {
        return Err(Diagnostics {
            file: COMMAND_LINE.into(),
            source: overrides.source.clone(),
            errors: unknown,
        });
    }
    for d in &mut declared {
        d.set = overrides.settings.iter().find(|s| s.name.text == d.name.text).cloned();
    }
    let mut substitute = Substitute {
        declared: &mut declared,
        errors,
        suggested: Vec::new(),
    };
    for s in &mut rest {
        substitute.statement(s);
    }
    // A parameter offered as the fix of a misspelled use is unused only
    // because of it: one error says both.
    let suggested = substitute.suggested;
    let params = declared
        .into_iter()
        .map(|d| {
            if d.uses.is_empty() && !suggested.contains(&d.name.text) {
                errors.push(
                    Diagnostic::error(d.name.span, format!("the parameter `{}` is never used", d.name.text))
                        .label("declared here")
                        .help(format!(
                            "use it as `${}` in a value, e.g. `activation=${}`, or remove it",
                            d.name.text, d.name.text
                        )),
                );
            }
            let value = d.set.as_ref().map_or(&d.default, |s| &s.value);
            Param {
                name: d.name.text,
                value: value.kind.text(),
                default: d.default.kind.text(),
                set: d.set.map(|s| overrides.source[s.flag.start..s.flag.end].to_string()),
                declared: d.default.span,
                uses: d.uses,
            }
        })
        .collect();
    Ok((rest, params))
}

/// A parameter as the file declares it, while its uses are substituted.
struct Declared {
    name: Word,
    default: Value,
    set: Option<Setting>,
    uses: Vec<Span>,
}

/// `param NAME = VALUE` (several on a line are several declarations).
fn declare(s: &Statement, declared: &mut Vec<Declared>, errors: &mut Vec<Diagnostic>) {
    if s.args.is_empty() {
        errors.push(
            Diagnostic::error(s.keyword.span, "`param` needs a name and a default value")
                .label("nothing declared")
                .help("write e.g. `param act = relu`, then use it as `activation=$act`"),
        );
    }
    let positional: Vec<&Argument> = s.args.iter().filter(|a| a.key.is_none()).collect();
    if let Some(first) = positional.first() {
        let example = match (&first.value.kind, s.args.get(1)) {
            (ValueKind::Name(n), Some(Argument { key: None, value })) => format!("`param {n} = {}`", value.kind.text()),
            (ValueKind::Name(n), _) => format!("`param {n} = VALUE`"),
            _ => "`param act = relu`".to_string(),
        };
        let span = positional
            .iter()
            .map(|a| a.value.span)
            .reduce(Span::to)
            .unwrap_or(first.value.span);
        errors.push(
            Diagnostic::error(span, "a parameter is declared as `param NAME = VALUE`")
                .label("no `NAME = ` before the value")
                .help(format!("write {example}")),
        );
    }
    for arg in &s.args {
        let Some(key) = &arg.key else { continue };
        // Declared all the same, so that its uses are not reported as
        // unknown: the value they get is left unresolved, which the tables
        // pass over as reported.
        if arg.value.kind.has_param() {
            errors.push(
                Diagnostic::error(arg.value.span, "a parameter's default cannot be another parameter")
                    .label("a parameter")
                    .help("give a value, e.g. `param act = relu`; the command line sets others (`--set act=tanh`)"),
            );
        }
        if let Some(first) = declared.iter().find(|d| d.name.text == key.text) {
            errors.push(
                Diagnostic::error(key.span, format!("the parameter `{}` is declared twice", key.text))
                    .label("second declaration")
                    .related(first.name.span, "first declaration")
                    .help("keep one `param` line for it"),
            );
            continue;
        }
        declared.push(Declared {
            name: key.clone(),
            default: arg.value.clone(),
            set: None,
            uses: Vec::new(),
        });
    }
}

fn unknown_setting(file: &str, s: &Setting, declared: &[Declared]) -> Diagnostic {
    let e = Diagnostic::error(s.name.span, format!("the model has no parameter `{}`", s.name.text))
        .label("not declared in the model");
    if declared.is_empty() {
        return e.note(format!("`{file}` declares no parameters")).help(format!(
            "declare it in the model with `param {} = VALUE` and use it as `${}`",
            s.name.text, s.name.text
        ));
    }
    let names: Vec<String> = declared.iter().map(|d| format!("`{}`", d.name.text)).collect();
    let e = e.note(format!("`{file}` declares {}", names.join(", ")));
    e.did_you_mean(&s.name.text, declared.iter().map(|d| d.name.text.as_str()))
}

struct Substitute<'a> {
    declared: &'a mut Vec<Declared>,
    errors: &'a mut Vec<Diagnostic>,
    /// The parameters suggested for unknown ones.
    suggested: Vec<String>,
}

impl Substitute<'_> {
    fn statement(&mut self, s: &mut Statement) {
        for arg in &mut s.args {
            self.value(&mut arg.value);
        }
        if let Some(body) = &mut s.block {
            body.retain(|inner| {
                if inner.keyword.text != "param" {
                    return true;
                }
                self.errors.push(
                    Diagnostic::error(inner.keyword.span, "parameters are declared outside blocks")
                        .label("inside a block")
                        .help("move the `param` line to the top of the file, above `input`"),
                );
                false
            });
            for inner in body {
                self.statement(inner);
            }
        }
    }

    fn value(&mut self, v: &mut Value) {
        match &mut v.kind {
            ValueKind::List(items) => return items.iter_mut().for_each(|i| self.value(i)),
            ValueKind::Call(_, args) => return args.iter_mut().for_each(|a| self.value(&mut a.value)),
            _ => {}
        }
        let ValueKind::Param(name) = &v.kind else {
            return;
        };
        let at = v.span;
        let Some(d) = self.declared.iter_mut().find(|d| d.name.text == *name) else {
            let e = Diagnostic::error(at, format!("unknown parameter `${name}`")).label("not declared");
            let names = self.declared.iter().map(|d| d.name.text.as_str());
            let e = match crate::diag::closest(name, names) {
                Some(best) => {
                    self.suggested.push(best.to_string());
                    e.help(format!("did you mean `${best}`?"))
                }
                None => e.help(format!(
                    "declare it, e.g. `param {name} = VALUE` at the top of the file"
                )),
            };
            self.errors.push(e);
            return;
        };
        d.uses.push(at);
        let value = d.set.as_ref().map_or(&d.default, |s| &s.value).clone();
        *v = respan(value, &|_| at);
    }
}

/// Adds to each error at a parameter's use where its value came from.
pub fn explain(params: &[Param], errors: &mut [Diagnostic]) {
    for e in errors {
        let Some(p) = params
            .iter()
            .find(|p| p.uses.iter().any(|u| u.start <= e.span.start && e.span.end <= u.end))
        else {
            continue;
        };
        match &p.set {
            Some(flag) => e
                .notes
                .push(format!("`${}` is `{}` here, from `{flag}`", p.name, p.value)),
            None if e.related.iter().all(|(s, _)| *s != p.declared) => {
                let label = format!("`${}` is `{}` by default", p.name, p.value);
                e.related.push((p.declared, label));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sets: &[&str], grid: &[&str]) -> CommandLine {
        let owned = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        CommandLine::parse(&owned(sets), &owned(grid)).unwrap_or_else(|d| panic!("{d}"))
    }

    fn texts(o: &Overrides) -> Vec<String> {
        o.settings
            .iter()
            .map(|s| format!("{}={}", s.name.text, s.value.kind.text()))
            .collect()
    }

    #[test]
    fn the_grid_is_every_combination_first_axis_slowest() {
        let l = line(&["lr=0.01"], &["act=relu,tanh", "bn=true,false,true2"]);
        let variants: Vec<Vec<String>> = l.variants().iter().map(texts).collect();
        assert_eq!(variants.len(), 6);
        assert_eq!(variants[0], ["lr=0.01", "act=relu", "bn=true"]);
        assert_eq!(variants[1], ["lr=0.01", "act=relu", "bn=false"]);
        assert_eq!(variants[2], ["lr=0.01", "act=relu", "bn=true2"]);
        assert_eq!(variants[3], ["lr=0.01", "act=tanh", "bn=true"]);
        assert_eq!(variants[5], ["lr=0.01", "act=tanh", "bn=true2"]);
    }

    #[test]
    fn no_grid_is_one_variant() {
        assert_eq!(line(&[], &[]).variants().len(), 1);
        assert_eq!(texts(&line(&["act=tanh"], &[]).variants()[0]), ["act=tanh"]);
    }

    #[test]
    fn commas_inside_lists_and_strings_do_not_split_the_grid() {
        let l = line(&[], &["init=[1, 2],[3, 4]", r#"data="a,b",mnist10k"#]);
        let values: Vec<Vec<String>> = l
            .grid
            .iter()
            .map(|a| a.values.iter().map(|v| v.kind.text()).collect())
            .collect();
        assert_eq!(values[0], ["[1, 2]", "[3, 4]"]);
        assert_eq!(values[1], [r#""a,b""#, "mnist10k"]);
    }

    #[test]
    fn spans_point_into_the_command_line() {
        let l = line(&["act=tanh"], &["bn=true,false"]);
        assert_eq!(l.source, "--set act=tanh --grid bn=true,false");
        let v = &l.grid[0].values[1];
        assert_eq!(&l.source[v.span.start..v.span.end], "false");
        assert_eq!(&l.source[l.sets[0].name.span.start..l.sets[0].name.span.end], "act");
    }

    #[test]
    fn mistakes_on_the_command_line_are_refused() {
        let fails = |sets: &[&str], grid: &[&str]| {
            let owned = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            CommandLine::parse(&owned(sets), &owned(grid))
                .err()
                .map(|d| d.errors[0].message.clone())
        };
        assert_eq!(fails(&["act"], &[]).as_deref(), Some("`--set` takes NAME=VALUE"));
        assert_eq!(fails(&["act="], &[]).as_deref(), Some("`--set act=` has no value"));
        assert_eq!(
            fails(&["act=relu"], &["act=tanh"]).as_deref(),
            Some("`act` is given twice")
        );
        assert_eq!(
            fails(&[], &["act=relu,relu"]).as_deref(),
            Some("`relu` is in the grid twice")
        );
        assert_eq!(
            fails(&[], &["act=relu,"]).as_deref(),
            Some("`--grid act=` has an empty value")
        );
        assert_eq!(fails(&["k=3y3"], &[]).as_deref(), Some("`3y3` is not a value"));
        assert_eq!(
            fails(&["k=[1, 2"], &[]).as_deref(),
            Some("syntax error: this list is never closed")
        );
        assert!(fails(&["2x=1"], &[]).is_some());
    }
}
