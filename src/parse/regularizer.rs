//! Keras's weight regularizers as a layer argument:
//! `kernel_regularizer=l2(0.01)`, `l1(0.001)`, `l1_l2(l1=0.01, l2=0.01)`,
//! or a bare `l2` (Keras's string `'l2'`, its default factor 0.01).

use super::args;
use super::ast::Regularizer;
use super::syntax::{Argument, Value, ValueKind};
use crate::diag::Diagnostic;

/// Each regularizer by its Keras function name, with its arguments in
/// Keras's order.
const KINDS: [(&str, &[&str]); 3] = [("l1", &["l1"]), ("l2", &["l2"]), ("l1_l2", &["l1", "l2"])];

/// Keras's class names and the module path a pasted line may carry.
fn keras_spelling(name: &str) -> &str {
    let short = name.strip_prefix("keras.").unwrap_or(name);
    let short = short.strip_prefix("regularizers.").unwrap_or(short);
    match short {
        "L1" => "l1",
        "L2" => "l2",
        "L1L2" | "l1l2" => "l1_l2",
        other => other,
    }
}

const EXAMPLES: &str = "`l2(0.01)`, `l1(0.01)` or `l1_l2(l1=0.01, l2=0.01)`";

pub fn regularizer(v: &Value, what: &str) -> Result<Regularizer, Diagnostic> {
    let (name, given, called) = match &v.kind {
        ValueKind::Name(n) | ValueKind::Str(n) => (n.as_str(), &[][..], false),
        ValueKind::Call(n, given) => (n.as_str(), given.as_slice(), true),
        other => {
            return Err(Diagnostic::error(
                v.span,
                format!("`{what}` must be a regularizer, found {}", other.describe()),
            )
            .label("expected a regularizer")
            .help(format!("write {EXAMPLES}")));
        }
    };
    let spelled = keras_spelling(name);
    let Some(&(kind, params)) = KINDS.iter().find(|(k, _)| *k == spelled) else {
        let e = Diagnostic::error(v.span, format!("unknown regularizer `{name}`")).label("unknown regularizer");
        return Err(match crate::diag::closest(spelled, KINDS.iter().map(|(k, _)| *k)) {
            Some(best) => e.help(format!("did you mean `{best}`?")),
            None => e.note(format!("a regularizer is {EXAMPLES}")),
        });
    };
    if kind == "l1_l2" && !called {
        // Keras 3 has no string for it either, and its factors default to 0.
        return Err(Diagnostic::error(v.span, "`l1_l2` needs its factors")
            .label("no factors given")
            .help("write e.g. `l1_l2(l1=0.01, l2=0.01)`; unset factors are 0, as in Keras"));
    }
    let factors = bind(v, kind, params, given)?;
    let factor = |i: usize, default: f64| factors[i].unwrap_or(default);
    Ok(match kind {
        "l1" => Regularizer::L1(factor(0, Regularizer::FACTOR)),
        "l2" => Regularizer::L2(factor(0, Regularizer::FACTOR)),
        _ => Regularizer::L1L2 {
            l1: factor(0, 0.0),
            l2: factor(1, 0.0),
        },
    })
}

/// The factors given for `params`, positional ones in order, each a
/// number of at least 0.
fn bind(call: &Value, kind: &str, params: &[&'static str], given: &[Argument]) -> Result<Vec<Option<f64>>, Diagnostic> {
    let mut factors = vec![None; params.len()];
    let mut next = 0;
    let takes = params.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
    for arg in given {
        let at = match &arg.key {
            None => {
                next += 1;
                if next > params.len() {
                    return Err(
                        Diagnostic::error(arg.value.span, format!("too many values for `{kind}`"))
                            .label("unexpected value")
                            .note(format!("`{kind}` takes {takes}")),
                    );
                }
                next - 1
            }
            Some(key) => params.iter().position(|p| *p == key.text).ok_or_else(|| {
                Diagnostic::error(key.span, format!("`{kind}` has no argument `{}`", key.text))
                    .label("unknown argument")
                    .note(format!("`{kind}` takes {takes}"))
            })?,
        };
        if factors[at].is_some() {
            return Err(
                Diagnostic::error(arg.value.span, format!("`{}` is given twice", params[at]))
                    .label("second value")
                    .related(call.span, "in this regularizer"),
            );
        }
        let factor = args::number_in(&arg.value, params[at], 0.0, f64::INFINITY, false).map_err(|e| {
            e.help("a penalty's factor is 0 or more: a larger one pulls the weights harder toward 0, e.g. `l2(0.01)`")
        })?;
        factors[at] = Some(factor);
    }
    Ok(factors)
}
