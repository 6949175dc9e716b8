//! `${VAR}` and `${VAR:-default}` substitution in one string value of the parsed configuration
//! (never in the YAML text, so a value from the environment is never parsed as YAML).

/// Why `${…}` could not be replaced: the message names the variable or the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InterpolateError(pub String);

/// Replaces `${VAR}` and `${VAR:-default}` using `env`; `$$` is a literal `$`.
///
/// `${VAR}` with `VAR` unset is an error naming the variable, so a forgotten secret is not
/// silently empty; `${VAR:-}` opts into an empty default. The default text is taken as is
/// (no nested `${}`), which keeps the rule easy to predict.
pub fn interpolate(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_tail.find('}') else {
            let line = raw[..raw.len() - rest.len() + i].lines().count().max(1);
            return Err(InterpolateError(format!(
                "unclosed `${{` on line {line}; write ${{VAR}} or ${{VAR:-default}}"
            )));
        };
        let body = &body_and_tail[..end];
        let (name, default) = match body.find(":-") {
            Some(j) => (&body[..j], Some(&body[j + 2..])),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InterpolateError(format!(
                "`${{{body}}}` is not a variable reference; use ${{NAME}} or ${{NAME:-default}}"
            )));
        }
        match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(InterpolateError(format!(
                    "environment variable {name} is not set; export it, add it to .env, or write ${{{name}:-default}}"
                )))
            }
        }
        rest = &body_and_tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
