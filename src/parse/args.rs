//! Binding a statement's values to named arguments, and converting each value
//! to what the argument needs, with an error in the user's terms otherwise.

use super::syntax::{Statement, Value, ValueKind};
use crate::diag::{Diagnostic, Span};

/// The largest size a single dimension, unit or filter count may have. Whole
/// tensors are bounded separately by the shape checker.
pub const MAX_SIZE: u64 = (1 << 31) - 1;

/// Other spellings a Keras user may reach for, and the argument they mean.
const ALIASES: [(&str, &str); 4] = [
    ("lr", "learning_rate"),
    ("batch", "batch_size"),
    ("pool", "pool_size"),
    ("kernel", "kernel_size"),
];

/// A statement's arguments, bound to names.
pub struct Args<'a> {
    statement: &'a Statement,
    bound: Vec<(&'static str, &'a Value)>,
    pub errors: Vec<Diagnostic>,
}

impl<'a> Args<'a> {
    /// Binds values to `positional` in order and `name=value` pairs to any of
    /// `keywords` (which include the positional names).
    pub fn bind(statement: &'a Statement, positional: &[&'static str], keywords: &[&'static str]) -> Args<'a> {
        Args::bind_as(statement, &statement.keyword.text, positional, keywords)
    }

    /// Like `bind`, naming the statement `what` in errors: `adam` rather
    /// than `optimizer`.
    pub fn bind_as(
        statement: &'a Statement,
        what: &str,
        positional: &[&'static str],
        keywords: &[&'static str],
    ) -> Args<'a> {
        let mut args = Args {
            statement,
            bound: Vec::new(),
            errors: Vec::new(),
        };
        let mut next_positional = positional.iter();
        for arg in &statement.args {
            let name = match &arg.key {
                None => match next_positional.next() {
                    // `conv2d 32 3x3 relu`: an activation (or a padding)
                    // that the next positional argument would take.
                    Some(slot) if meant_for(&arg.value, keywords).is_some_and(|key| key != *slot) => {
                        let value = arg.value.kind.text();
                        let key = meant_for(&arg.value, keywords).unwrap_or_default();
                        args.errors.push(
                            Diagnostic::error(
                                arg.value.span,
                                format!("`{value}` would be read as `{slot}`, not as `{key}`"),
                            )
                            .label(format!("read as `{slot}`"))
                            .help(format!("write `{key}={value}`")),
                        );
                        continue;
                    }
                    Some(name) => *name,
                    None => {
                        let takes = match positional {
                            [] => "no values without a name".to_string(),
                            [one] => format!("one value without a name (`{one}`)"),
                            many => format!("{} values without a name ({})", many.len(), quoted(many)),
                        };
                        let e = Diagnostic::error(arg.value.span, format!("too many values for `{what}`"))
                            .label("unexpected value")
                            .note(format!("`{what}` takes {takes}"));
                        args.errors.push(match meant_for(&arg.value, keywords) {
                            Some(key) => e.help(format!("write it as `{key}={}`", arg.value.kind.text())),
                            None => e.help("remove it, or write it as `name=value` for one of the other arguments"),
                        });
                        continue;
                    }
                },
                Some(key) => {
                    let canonical = ALIASES
                        .iter()
                        .find(|(alias, _)| *alias == key.text)
                        .map_or(key.text.as_str(), |(_, c)| c);
                    match keywords.iter().find(|k| **k == canonical) {
                        Some(name) => *name,
                        None => {
                            let e = Diagnostic::error(key.span, format!("`{what}` has no argument `{}`", key.text))
                                .label("unknown argument");
                            let e = match crate::diag::closest(&key.text, keywords.iter().copied()) {
                                Some(best) => e.help(format!("did you mean `{best}`?")),
                                None if keywords.is_empty() => e.note(format!("`{what}` takes no arguments")),
                                None => e.note(format!("`{what}` takes {}", quoted(keywords))),
                            };
                            args.errors.push(e);
                            continue;
                        }
                    }
                }
            };
            if let Some((_, earlier)) = args.bound.iter().find(|(n, _)| *n == name) {
                args.errors.push(
                    Diagnostic::error(arg.value.span, format!("`{name}` is given twice"))
                        .label("second value")
                        .related(earlier.span, "first value")
                        .help("remove one of them"),
                );
                continue;
            }
            args.bound.push((name, &arg.value));
        }
        args
    }

    /// The argument's value converted, or `None` if absent or invalid (the
    /// error is recorded).
    pub fn get<T>(&mut self, name: &str, convert: impl FnOnce(&Value) -> Result<T, Diagnostic>) -> Option<T> {
        let value = self.bound.iter().find(|(n, _)| *n == name)?.1;
        // An unknown parameter, reported where it was found.
        if value.kind.has_param() {
            return None;
        }
        match convert(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Like `get`, with a default when the argument is absent. `None` only
    /// when the value was invalid.
    pub fn or<T>(
        &mut self,
        name: &str,
        default: T,
        convert: impl FnOnce(&Value) -> Result<T, Diagnostic>,
    ) -> Option<T> {
        if self.has(name) {
            self.get(name, convert)
        } else {
            Some(default)
        }
    }

    /// Like `get`, but a missing argument is an error with `help`.
    pub fn require<T>(
        &mut self,
        name: &str,
        help: &str,
        convert: impl FnOnce(&Value) -> Result<T, Diagnostic>,
    ) -> Option<T> {
        if !self.has(name) {
            let what = &self.statement.keyword.text;
            self.errors.push(
                Diagnostic::error(self.statement.keyword.span, format!("`{what}` needs `{name}`"))
                    .label(format!("missing `{name}`"))
                    .help(help.to_string()),
            );
            return None;
        }
        self.get(name, convert)
    }

    pub fn has(&self, name: &str) -> bool {
        self.bound.iter().any(|(n, _)| *n == name)
    }

    pub fn span_of(&self, name: &str) -> Option<Span> {
        self.bound.iter().find(|(n, _)| *n == name).map(|(_, v)| v.span)
    }

    /// The positional value at `index`, whatever its name, for hints about
    /// arguments given in the wrong order.
    pub fn positional(&self, index: usize) -> Option<&'a Value> {
        self.statement
            .args
            .iter()
            .filter(|a| a.key.is_none())
            .nth(index)
            .map(|a| &a.value)
    }
}

/// The argument a stray positional value was most likely meant for, judged
/// by the value alone: `relu` is an activation, `same` a padding.
fn meant_for(value: &Value, keywords: &[&'static str]) -> Option<&'static str> {
    let ValueKind::Name(name) = &value.kind else {
        return None;
    };
    let key = if super::ast::Activation::ALL.iter().any(|(n, _)| n == name) {
        "activation"
    } else if name == "same" || name == "valid" {
        "padding"
    } else {
        return None;
    };
    keywords.iter().copied().find(|k| *k == key)
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn wrong(value: &Value, what: &str, expected: &str) -> Diagnostic {
    // A bare argument name reads as code; a phrase such as "the dropout
    // rate" reads as prose.
    let what = if what.contains(' ') {
        what.to_string()
    } else {
        format!("`{what}`")
    };
    Diagnostic::error(
        value.span,
        format!("{what} must be {expected}, found {}", value.kind.describe()),
    )
    .label(format!("expected {expected}"))
}

/// A whole number of at least 1: filters, units, sizes.
pub fn count(value: &Value, what: &str) -> Result<usize, Diagnostic> {
    match &value.kind {
        ValueKind::Number(x, _) if x.fract() == 0.0 && *x >= 1.0 && *x <= MAX_SIZE as f64 => Ok(*x as usize),
        ValueKind::Number(x, _) if *x > MAX_SIZE as f64 => Err(wrong(value, what, &format!("at most {MAX_SIZE}"))),
        ValueKind::Number(x, _) if x.fract() == 0.0 => Err(wrong(value, what, "at least 1")),
        _ => Err(wrong(value, what, "a whole number of at least 1")),
    }
}

/// A whole number of 0 or more (seeds, patience).
pub fn natural(value: &Value, what: &str) -> Result<u64, Diagnostic> {
    // 2^64, exactly: `u64::MAX as f64` rounds up to it, so a bound written
    // with it let 2^64 through, clamped to 2^64 - 1.
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    match &value.kind {
        // Digits are read exactly, not through the float.
        ValueKind::Number(_, text) if text.bytes().all(|b| b.is_ascii_digit()) => text
            .parse::<u64>()
            .map_err(|_| wrong(value, what, &format!("at most {}", u64::MAX))),
        ValueKind::Number(x, _) if x.fract() == 0.0 && *x >= 0.0 && *x < TWO_TO_64 => Ok(*x as u64),
        ValueKind::Number(x, _) if x.fract() == 0.0 && *x >= TWO_TO_64 => {
            Err(wrong(value, what, &format!("at most {}", u64::MAX)))
        }
        _ => Err(wrong(value, what, "a whole number of 0 or more")),
    }
}

/// A 2-D window: `3` means 3x3, `5x3` is height 5, width 3.
pub fn window(value: &Value, what: &str) -> Result<[usize; 2], Diagnostic> {
    let too_small = || {
        wrong(value, what, "at least 1 on each side").help(match what {
            "strides" => "a stride is how far the window moves per step: `strides=2` or `strides=2x1`",
            _ => "write a height x width of 1 or more, e.g. `3x3`",
        })
    };
    match &value.kind {
        ValueKind::Number(x, _) if *x < 1.0 => Err(too_small()),
        ValueKind::Number(..) => count(value, what).map(|n| [n, n]),
        ValueKind::Dims(d) if d.len() == 2 => {
            if d.contains(&0) {
                Err(too_small())
            } else if d.iter().any(|&x| x > MAX_SIZE) {
                Err(wrong(value, what, &format!("at most {MAX_SIZE} on each side")))
            } else {
                Ok([d[0] as usize, d[1] as usize])
            }
        }
        ValueKind::Dims(d) => Err(wrong(value, what, "a height x width like `3x3`").help(format!(
            "a 2-D window has two sides; the channels come from the layer's input: write `{}x{}`",
            d[0],
            d.get(1).copied().unwrap_or(d[0])
        ))),
        _ => Err(wrong(value, what, "a size like `3x3` or `3`")),
    }
}

/// A number `lo <= x < hi` (or `<= hi` when `hi_inclusive`).
pub fn number_in(value: &Value, what: &str, lo: f64, hi: f64, hi_inclusive: bool) -> Result<f64, Diagnostic> {
    let range = if hi.is_infinite() {
        format!("at least {lo}")
    } else if hi_inclusive {
        format!("from {lo} to {hi}")
    } else {
        format!("at least {lo} and below {hi}")
    };
    match &value.kind {
        ValueKind::Number(x, _) if *x >= lo && (*x < hi || (hi_inclusive && *x == hi)) => Ok(*x),
        ValueKind::Number(..) => Err(wrong(value, what, &range)),
        _ => Err(wrong(value, what, "a number")),
    }
}

/// A positive number (learning rates, epsilons).
pub fn positive(value: &Value, what: &str) -> Result<f64, Diagnostic> {
    match &value.kind {
        ValueKind::Number(x, _) if *x > 0.0 => Ok(*x),
        _ => Err(wrong(value, what, "a number greater than 0")),
    }
}

pub fn boolean(value: &Value, what: &str) -> Result<bool, Diagnostic> {
    match &value.kind {
        ValueKind::Name(n) if n == "true" || n == "True" => Ok(true),
        ValueKind::Name(n) if n == "false" || n == "False" => Ok(false),
        _ => Err(wrong(value, what, "`true` or `false`")),
    }
}

/// One of a fixed set of names, with a did-you-mean.
pub fn choice<T: Clone>(value: &Value, what: &str, options: &[(&'static str, T)]) -> Result<T, Diagnostic> {
    let names = || options.iter().map(|(n, _)| *n);
    if let ValueKind::Name(name) | ValueKind::Str(name) = &value.kind {
        if let Some((_, v)) = options.iter().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        let e = Diagnostic::error(value.span, format!("unknown {what} `{name}`")).label(format!("unknown {what}"));
        return Err(match crate::diag::closest(name, names()) {
            Some(best) => e.help(format!("did you mean `{best}`?")),
            None => e.note(format!("{what} is one of {}", quoted(&names().collect::<Vec<_>>()))),
        });
    }
    Err(wrong(
        value,
        what,
        &format!("one of {}", quoted(&names().collect::<Vec<_>>())),
    ))
}

/// A name or a path: `mnist10k`, `"faces/"`.
pub fn text(value: &Value, what: &str) -> Result<String, Diagnostic> {
    match &value.kind {
        ValueKind::Name(s) | ValueKind::Str(s) => Ok(s.clone()),
        _ => Err(wrong(value, what, "a name or a quoted path")),
    }
}

/// The numbers of a (possibly nested) list, in reading order.
pub fn numbers(value: &Value, what: &str) -> Result<Vec<f64>, Diagnostic> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match &v.kind {
            ValueKind::Number(x, _) => out.push(*x),
            ValueKind::List(items) => stack.extend(items.iter().rev()),
            _ => return Err(wrong(v, what, "a number")),
        }
    }
    Ok(out)
}
