//! Config files as the Go server reads them: a Go `text/template` with the
//! two functions of kayac/go-config's `LoadWithEnv`, expanded before the YAML
//! is parsed.
//!
//! - `{{ env "A" "B" ... }}` looks each argument up as an environment
//!   variable in turn and yields the first non-empty value; when none is
//!   set, it yields the last argument itself (`{{ env "PORT" "9180" }}` is
//!   `9180`, a lone `{{ env "PORT" }}` is the text `PORT`).
//! - `{{ must_env "NAME" }}` yields the value, even an empty one; an unset
//!   variable is an error.
//!
//! Go's action syntax for this subset is kept: `{{- ` and ` -}}` trim the
//! whitespace beside them, arguments are "interpreted" (Go escapes) or
//! `raw` strings, and `{{/* comments */}}` yield nothing. Anything else
//! inside `{{ }}` (pipelines, variables, other functions, `if`) is an error
//! naming the line, never passed through. Text without `{{` is untouched.
//!
//! No template crate is used: the Rust ports of Go templates (gtmpl) are
//! unmaintained and report errors without file lines, and this subset is a
//! small lexer.

use std::fmt;

/// A template that cannot be expanded, at a 1-based line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Go's template whitespace, trimmed by `{{-` and `-}}`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Expands every action of `text`, looking variables up with `lookup`
/// (`None`: not set).
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0; // bytes of `text` before `rest`
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut literal = &rest[..open];
        if trim_next {
            literal = literal.trim_start_matches(is_space);
        }
        let line = text[..consumed + open].matches('\n').count() + 1;
        let error = |message: String| TemplateError { line, message };
        let mut inner = &rest[open + 2..];
        // `{{- ` trims the text before the action.
        if inner.starts_with('-') && inner[1..].starts_with(is_space) {
            literal = literal.trim_end_matches(is_space);
            inner = &inner[1..];
        }
        out.push_str(literal);
        let (value, after, trim) = action(inner, lookup).map_err(error)?;
        out.push_str(&value);
        trim_next = trim;
        consumed = text.len() - after.len();
        rest = after;
    }
    if trim_next {
        rest = rest.trim_start_matches(is_space);
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses one action after its `{{` (and trim marker): returns its value,
/// the text after its `}}`, and whether it ends with `-}}`.
fn action<'a>(
    inner: &'a str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, &'a str, bool), String> {
    let mut s = inner.trim_start_matches(is_space);
    if let Some(comment) = s.strip_prefix("/*") {
        let end = comment
            .find("*/")
            .ok_or("unclosed comment: `/*` without `*/`")?;
        let (trim, after) = close(&comment[end + 2..]).ok_or("comment must end with `*/}}`")?;
        return Ok((String::new(), after, trim));
    }
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..name_len];
    s = &s[name_len..];
    let mut args = Vec::new();
    loop {
        let spaced = s.starts_with(is_space);
        s = s.trim_start_matches(is_space);
        if let Some((trim, after)) = close_trimmed(s) {
            return call(name, &args, lookup).map(|v| (v, after, trim));
        }
        if s.is_empty() {
            return Err("unclosed action: `{{` without `}}`".into());
        }
        if !spaced && !args.is_empty() || name.is_empty() {
            return Err(unsupported(s));
        }
        let (arg, after) = string_literal(s).ok_or_else(|| unsupported(s))??;
        args.push(arg);
        s = after;
    }
}

/// `}}` or `-}}` at the start of `s` (whitespace already skipped).
fn close_trimmed(s: &str) -> Option<(bool, &str)> {
    if let Some(after) = s.strip_prefix("-}}") {
        return Some((true, after));
    }
    s.strip_prefix("}}").map(|after| (false, after))
}

/// `}}`, or whitespace then `-}}`, at the start of `s`.
fn close(s: &str) -> Option<(bool, &str)> {
    if let Some(after) = s.strip_prefix("}}") {
        return Some((false, after));
    }
    let trimmed = s.trim_start_matches(is_space);
    (trimmed.len() < s.len())
        .then(|| trimmed.strip_prefix("-}}").map(|after| (true, after)))
        .flatten()
}

fn unsupported(s: &str) -> String {
    let shown: String = s.chars().take(24).collect();
    format!(
        "unsupported template syntax at {shown:?}: only {{{{ env \"NAME\" \"default\" }}}} and {{{{ must_env \"NAME\" }}}} are supported"
    )
}

/// Runs `env` or `must_env`.
fn call(
    name: &str,
    args: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match name {
        "env" => {
            for key in args {
                if let Some(v) = lookup(key).filter(|v| !v.is_empty()) {
                    return Ok(v);
                }
            }
            Ok(args.last().cloned().unwrap_or_default())
        }
        "must_env" => match args {
            [key] => lookup(key)
                .ok_or_else(|| format!("must_env {key:?}: environment variable {key} is not set")),
            _ => Err(format!(
                "must_env takes one variable name, got {}",
                args.len()
            )),
        },
        "" => Err("empty action `{{ }}`".into()),
        other => Err(format!(
            "function {other:?} is not supported: only env and must_env are"
        )),
    }
}

/// A Go string literal at the start of `s`: its value and the text after
/// it, `None` when `s` does not start with a quote, `Some(Err)` when the
/// literal is malformed.
fn string_literal(s: &str) -> Option<Result<(String, &str), String>> {
    if let Some(raw) = s.strip_prefix('`') {
        return Some(match raw.find('`') {
            Some(end) => Ok((raw[..end].to_string(), &raw[end + 1..])),
            None => Err("unterminated raw string".into()),
        });
    }
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some(Ok((value, &body[i + 1..]))),
            '\n' => return Some(Err("newline in string".into())),
            '\\' => match escape(&mut chars) {
                Ok(c) => value.push(c),
                Err(e) => return Some(Err(e)),
            },
            c => value.push(c),
        }
    }
    Some(Err("unterminated quoted string".into()))
}

/// One Go escape sequence after its backslash.
fn escape(chars: &mut std::str::CharIndices<'_>) -> Result<char, String> {
    fn hex(chars: &mut std::str::CharIndices<'_>, n: usize) -> Result<char, String> {
        let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("invalid escape \\{digits}"))
    }
    let (_, c) = chars.next().ok_or("unterminated quoted string")?;
    Ok(match c {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        '\\' => '\\',
        '"' => '"',
        'x' => hex(chars, 2)?,
        'u' => hex(chars, 4)?,
        'U' => hex(chars, 8)?,
        '0'..='7' => {
            let rest: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
            let code = u32::from_str_radix(&format!("{c}{rest}"), 8)
                .ok()
                .filter(|_| rest.len() == 2)
                .ok_or_else(|| format!("invalid octal escape \\{c}{rest}"))?;
            char::from_u32(code).ok_or("invalid octal escape")?
        }
        other => return Err(format!("unknown escape sequence \\{other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn run(
        text: &str,
        env: &'static [(&'static str, &'static str)],
    ) -> Result<String, TemplateError> {
        expand(text, &vars(env))
    }

    #[test]
    fn env_takes_the_first_non_empty_variable_else_the_last_argument() {
        let env = &[("A", ""), ("B", "b"), ("PORT", "1234")];
        assert_eq!(run(r#"x: {{ env "A" "B" "d" }}"#, env).unwrap(), "x: b");
        assert_eq!(run(r#"{{ env "A" "d" }}"#, env).unwrap(), "d");
        assert_eq!(run(r#"{{ env "NOPE" }}"#, env).unwrap(), "NOPE");
        assert_eq!(run(r#"{{env "PORT"}}"#, env).unwrap(), "1234");
        assert_eq!(run(r#"'{{ env "X" "x y" }}'"#, env).unwrap(), "'x y'");
        assert_eq!(run("{{ env `B` `raw` }}", env).unwrap(), "b");
        assert_eq!(
            run(r#"{{ env "Q" "a\tb\"c\u00e9\x41" }}"#, env).unwrap(),
            "a\tb\"céA"
        );
        assert_eq!(run("{{ env }}", env).unwrap(), "");
    }

    #[test]
    fn must_env_yields_empty_values_and_refuses_unset_ones() {
        let env = &[("E", ""), ("S", "set")];
        assert_eq!(run(r#"a: "{{ must_env "E" }}""#, env).unwrap(), r#"a: """#);
        assert_eq!(run(r#"{{ must_env "S" }}"#, env).unwrap(), "set");
        let err = run("a: 1\nb: {{ must_env \"MISSING\" }}\n", env).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("MISSING"), "{err}");
    }

    #[test]
    fn trim_markers_and_comments() {
        assert_eq!(
            run("a:  {{- env \"X\" \"1\" -}}  \n\nb", &[]).unwrap(),
            "a:1b"
        );
        assert_eq!(run("a {{/* note */}} b", &[]).unwrap(), "a  b");
        assert_eq!(run("a\n{{- /* note */ -}}\nb", &[]).unwrap(), "ab");
        // `{{-3}}` is not a trim marker in Go; here it is not supported.
        assert!(run("{{-3}}", &[]).is_err());
    }

    #[test]
    fn text_without_actions_is_untouched() {
        let text = "port: 9180\n# a comment with } and {\nx: \"{ }\"\n";
        assert_eq!(run(text, &[]).unwrap(), text);
    }

    #[test]
    fn anything_else_is_an_error_naming_the_line() {
        for (text, line) in [
            ("a\n\n{{ .Port }}", 3),
            ("{{ if true }}x{{ end }}", 1),
            ("x\n{{ env \"A\" | printf \"%q\" }}", 2),
            ("{{ getenv \"A\" }}", 1),
            ("{{ env \"A\"", 1),
            ("{{ env \"A }}", 1),
            ("{{ env 9180 }}", 1),
            ("{{ must_env \"A\" \"B\" }}", 1),
            ("{{ }}", 1),
            ("{{ /* open }}", 1),
            ("{{ env \"A\"\"B\" }}", 1),
        ] {
            let err = run(text, &[]).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
