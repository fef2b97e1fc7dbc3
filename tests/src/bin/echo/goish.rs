//! Pure helpers that copy the Go standard-library behaviour the conformance `echo-basic`
//! backend gets for free: `time.ParseDuration`, `textproto.CanonicalMIMEHeaderKey`,
//! `url.ParseQuery`, the `ServeMux` path cleaning and `encoding/json`'s HTML escaping.
//!
//! The conformance suite compares the echo's JSON and status codes, so these mimic Go's
//! observable results (including error texts) rather than any Rust convention.

use std::fmt::Write as _;

/// Units accepted by Go's `time.ParseDuration`, in nanoseconds.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // U+00B5 micro sign
    ("\u{3bc}s", 1_000), // U+03BC Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// 1<<63: one past `i64::MAX`, the bound Go's parser works against (it allows exactly this
/// magnitude only for a negative duration).
const NS_LIMIT: u64 = 1 << 63;

/// Parses a Go duration string (`500ms`, `1m30s`, `1.5s`, `-2h`) into signed nanoseconds.
///
/// Errors carry Go's own message text (`time: invalid duration "x"`), because the echo
/// returns that text in its 500 answer.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));

    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // A bare zero is the only value that may omit the unit.
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }

    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }

        // Integer part.
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut value: u64 = 0;
        for c in s[..digits].bytes() {
            if value > NS_LIMIT / 10 {
                return Err(invalid());
            }
            value = value * 10 + u64::from(c - b'0');
            if value > NS_LIMIT {
                return Err(invalid());
            }
        }
        let had_int = digits > 0;
        s = &s[digits..];

        // Fraction part: digits beyond what fits are consumed but ignored, as in Go.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut had_fraction = false;
        if let Some(rest) = s.strip_prefix('.') {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            had_fraction = digits > 0;
            let mut overflow = false;
            for c in rest[..digits].bytes() {
                if overflow {
                    continue;
                }
                if fraction > (NS_LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > NS_LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            s = &rest[digits..];
        }
        if !had_int && !had_fraction {
            return Err(invalid());
        }

        // Unit: everything up to the next number. Stopping at an ASCII byte keeps the
        // slice on a char boundary.
        let unit_len = s
            .bytes()
            .position(|c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let Some(&(_, unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit_name) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                go_quote(unit_name),
                go_quote(orig)
            ));
        };

        if value > NS_LIMIT / unit {
            return Err(invalid());
        }
        value *= unit;
        if fraction > 0 {
            // Same float arithmetic as Go, so rounding of e.g. `1.0000000001s` matches.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > NS_LIMIT {
                return Err(invalid());
            }
        }
        total = match total.checked_add(value) {
            Some(t) if t <= NS_LIMIT => t,
            _ => return Err(invalid()),
        };
    }

    if neg {
        // total <= 2^63, so this is exact, including i64::MIN.
        return Ok(0i64.wrapping_sub(total as i64));
    }
    if total > NS_LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Go's `time.quote`: double quotes, with non-ASCII and control bytes written as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if !c.is_ascii() || c < ' ' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Whether `c` may appear in an HTTP header field name (an RFC 9110 token character).
fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Whether `name` is a non-empty token, i.e. a header name Go would write.
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token_byte)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-foo-bar` becomes `X-Foo-Bar`.
///
/// Names containing a byte that is not a token character are returned unchanged, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    if !name.bytes().all(is_token_byte) {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Interprets the values of `X-Echo-Set-Header` the way `echo-basic` does.
///
/// Each value is a comma-separated list of `Name:value` pieces. Returns the headers to set,
/// in first-seen order; a name seen again (same exact spelling, Go keys its map by the
/// string) gets `,value` appended. Pieces whose name is empty or not a token are dropped,
/// because Go's response writer silently skips such names.
pub fn parse_echo_set_header<'a, I>(values: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut out: Vec<(String, String)> = Vec::new();
    for list in values {
        for piece in list.split(',') {
            let piece = piece.trim();
            let (name, value) = piece.split_once(':').unwrap_or((piece, ""));
            if !is_valid_header_name(name) {
                continue;
            }
            // Go trims values when it writes them; trimming each part is equivalent.
            let value = value.trim();
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, existing)) => {
                    existing.push(',');
                    existing.push_str(value);
                }
                None => out.push((name.to_owned(), value.to_owned())),
            }
        }
    }
    out
}

/// Go's `url.ParseQuery`, keeping order: `&`-separated `key=value` pairs, `+` as space,
/// percent escapes decoded. Pairs with a `;` or a bad escape are skipped, as Go does.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(key)?, query_unescape(value)?))
        })
        .collect()
}

/// Decodes one form-encoded component; `None` on a malformed `%` escape.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    // Go strings may hold any bytes; lossy is the closest a Rust String can get.
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// First value of `key` in parsed pairs, like Go's `Values.Get`.
pub fn first_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `echo-basic`'s `preserveSlashes`: `strings.ReplaceAll(path, "//", "/")`, a single
/// left-to-right pass (so `///` becomes `//`, exactly like Go).
pub fn collapse_double_slashes(path: &str) -> String {
    path.replace("//", "/")
}

/// Go's `ServeMux` `cleanPath`: `path.Clean` with a leading `/`, keeping a trailing slash.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_owned();
    }
    let rooted = if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    };
    let mut segments: Vec<&str> = Vec::new();
    for segment in rooted.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                // At the root `..` has nowhere to go, so it is dropped.
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut cleaned = format!("/{}", segments.join("/"));
    if rooted.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// Applies the extra escaping of Go's `encoding/json` (`<`, `>`, `&`, U+2028, U+2029) to
/// serialized JSON. These characters can only occur inside JSON strings, so a plain
/// replacement over the whole document is safe.
pub fn go_json_escape(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-0"), Ok(0));
        assert_eq!(parse_go_duration("500ms"), Ok(500 * MS));
        assert_eq!(parse_go_duration("2s"), Ok(2 * S));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * S));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500 * MS));
        assert_eq!(parse_go_duration(".5s"), Ok(500 * MS));
        assert_eq!(parse_go_duration("1.s"), Ok(S));
        assert_eq!(parse_go_duration("100us"), Ok(100_000));
        assert_eq!(parse_go_duration("100\u{b5}s"), Ok(100_000));
        assert_eq!(parse_go_duration("100\u{3bc}s"), Ok(100_000));
        assert_eq!(parse_go_duration("7ns"), Ok(7));
        assert_eq!(parse_go_duration("1h2m3s4ms"), Ok(3_723 * S + 4 * MS));
        assert_eq!(parse_go_duration("+3s"), Ok(3 * S));
        assert_eq!(parse_go_duration("-1.5h"), Ok(-5_400 * S));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn go_duration_errors_match_go_text() {
        assert_eq!(
            parse_go_duration("").unwrap_err(),
            r#"time: invalid duration """#
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            r#"time: invalid duration "abc""#
        );
        assert_eq!(
            parse_go_duration("1").unwrap_err(),
            r#"time: missing unit in duration "1""#
        );
        assert_eq!(
            parse_go_duration("5x").unwrap_err(),
            r#"time: unknown unit "x" in duration "5x""#
        );
        assert_eq!(
            parse_go_duration(".s").unwrap_err(),
            r#"time: invalid duration ".s""#
        );
        assert_eq!(
            parse_go_duration("1s ").unwrap_err(),
            r#"time: unknown unit "s " in duration "1s ""#
        );
        assert_eq!(
            parse_go_duration("9223372036854775808ns").unwrap_err(),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(
            parse_go_duration("3\u{e9}").unwrap_err(),
            r#"time: unknown unit "\xc3\xa9" in duration "3\xc3\xa9""#
        );
    }

    #[test]
    fn header_keys_are_canonicalised_like_go() {
        assert_eq!(canonical_header_key("x-foo-bar"), "X-Foo-Bar");
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("X-FOO"), "X-Foo");
        assert_eq!(canonical_header_key("x_foo_bar"), "X_foo_bar");
        assert_eq!(canonical_header_key("-x--y"), "-X--Y");
        assert_eq!(canonical_header_key("www-authenticate"), "Www-Authenticate");
        // Not a token: left alone.
        assert_eq!(canonical_header_key("bad name"), "bad name");
    }

    #[test]
    fn echo_set_header_pieces() {
        let set = |values: &[&str]| parse_echo_set_header(values.iter().copied());
        // The conformance client always sends the header, usually empty.
        assert!(set(&[""]).is_empty());
        assert_eq!(
            set(&["X-Header-Set-1: a, X-Header-Set-2:b"]),
            vec![
                ("X-Header-Set-1".to_owned(), "a".to_owned()),
                ("X-Header-Set-2".to_owned(), "b".to_owned()),
            ]
        );
        // Casing is kept; repeats are joined with a comma; values may contain colons.
        assert_eq!(
            set(&["x-lower:1,x-lower: 2", "Other:http://x:80/ "]),
            vec![
                ("x-lower".to_owned(), "1,2".to_owned()),
                ("Other".to_owned(), "http://x:80/".to_owned()),
            ]
        );
        // Empty / invalid names produce nothing; a bare name gets an empty value.
        assert_eq!(
            set(&[":v, bad name:v, ,Bare"]),
            vec![("Bare".to_owned(), String::new())]
        );
        // Different spellings are different Go map keys.
        assert_eq!(set(&["A:1,a:2"]).len(), 2);
    }

    #[test]
    fn queries_decode_like_go() {
        assert_eq!(
            parse_query("a=1&b=x+y%21&c&&d=%zz&e=1;2&a=3"),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x y!".to_owned()),
                ("c".to_owned(), String::new()),
                ("a".to_owned(), "3".to_owned()),
            ]
        );
        let pairs = parse_query("delay=1s&delay=2s");
        assert_eq!(first_value(&pairs, "delay"), Some("1s"));
        assert_eq!(first_value(&pairs, "nope"), None);
    }

    #[test]
    fn paths_clean_like_servemux() {
        assert_eq!(collapse_double_slashes("//a//b"), "/a/b");
        assert_eq!(collapse_double_slashes("///"), "//");
        assert_eq!(clean_path("/a/b"), "/a/b");
        assert_eq!(clean_path("/a/../b"), "/b");
        assert_eq!(clean_path("/a/./b/"), "/a/b/");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(clean_path("//"), "/");
        assert_eq!(clean_path(""), "/");
    }

    #[test]
    fn json_gets_go_html_escaping() {
        assert_eq!(
            go_json_escape(r#"{"a":"<b>&"}"#.to_owned()),
            r#"{"a":"\u003cb\u003e\u0026"}"#
        );
        assert_eq!(go_json_escape("{}".to_owned()), "{}");
    }
}
