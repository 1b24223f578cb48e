//! The partition naming template.
//!
//! Tokens: `{table}` (the table's name), `{YYYY}`, `{MM}`, `{DD}` (the lower
//! bound's calendar date in the plan's time zone), `{IYYY}` and `{IW}` (ISO
//! year and week), and for integer keys `{START}` and `{END}`. The MeshHook
//! style is `{table}_y{YYYY}m{MM}`.

use super::Interval;

const TOKENS: &[&str] = &["table", "YYYY", "MM", "DD", "IYYY", "IW", "START", "END"];

/// Checks that a template uses only known tokens and balanced braces.
pub fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    let mut any_token = false;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{t}` has a `{{` without its `}}`"))?;
        let token = &after[..close];
        if !TOKENS.contains(&token) {
            return Err(format!(
                "`{t}` uses the unknown token {{{token}}}; known tokens are {}",
                TOKENS.iter().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ")
            ));
        }
        any_token = true;
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{t}` has a `}}` without its `{{`"));
    }
    if !any_token {
        return Err(format!(
            "`{t}` has no token, so every partition would get the same name"
        ));
    }
    Ok(())
}

/// The default template for a layout.
pub fn default_template(interval: Option<Interval>) -> &'static str {
    match interval {
        Some(Interval::Day) => "{table}_p{YYYY}{MM}{DD}",
        Some(Interval::Week) => "{table}_p{IYYY}w{IW}",
        Some(Interval::Month) => "{table}_p{YYYY}{MM}",
        Some(Interval::Year) => "{table}_p{YYYY}",
        None => "{table}_p{START}",
    }
}

/// Values for the tokens of one partition.
#[derive(Default)]
pub struct TokenValues {
    pub date: Option<chrono::NaiveDate>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// List partitions: the partition's value.
    pub value: Option<i64>,
    /// List partitions of a text, enum, uuid or date key: the value.
    pub text: Option<String>,
}

/// Renders a template. Negative integers are written with an `m` prefix, as
/// a minus sign would need quoting in every tool that shows the name.
pub fn render(template: &str, table: &str, v: &TokenValues) -> String {
    use chrono::Datelike;
    let int = |n: Option<i64>| match n {
        Some(n) if n < 0 => format!("m{}", n.unsigned_abs()),
        Some(n) => n.to_string(),
        None => String::new(),
    };
    let mut out = template.replace("{table}", table);
    if let Some(d) = v.date {
        let iso = d.iso_week();
        out = out
            .replace("{YYYY}", &format!("{:04}", d.year()))
            .replace("{MM}", &format!("{:02}", d.month()))
            .replace("{DD}", &format!("{:02}", d.day()))
            .replace("{IYYY}", &format!("{:04}", iso.year()))
            .replace("{IW}", &format!("{:02}", iso.week()));
    }
    let value = match &v.text {
        Some(t) => name_part(t),
        None => int(v.value),
    };
    out.replace("{START}", &int(v.start))
        .replace("{END}", &int(v.end))
        .replace("{VALUE}", &value)
}

/// A value as part of a name: lower-case letters, digits and `_` as they
/// are, short; any other value is cleaned and given a short hash of
/// itself, so that two values never share a name.
fn name_part(v: &str) -> String {
    let plain = !v.is_empty()
        && v.len() <= 30
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        return v.to_string();
    }
    let cleaned: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    // FNV-1a: the same name for the same value in every build.
    let hash = v.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{cleaned}_{:06x}", hash & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_template("{table}_y{YYYY}m{MM}").is_ok());
        assert!(check_template("{table}_{bogus}").is_err());
        assert!(check_template("{table").is_err());
        assert!(check_template("fixed").is_err());
        let d = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let v = TokenValues {
            date: Some(d),
            ..Default::default()
        };
        assert_eq!(
            render("{table}_y{YYYY}m{MM}", "workflow_events", &v),
            "workflow_events_y2025m01"
        );
        assert_eq!(render("{table}_p{IYYY}w{IW}", "e", &v), "e_p2025w01");
        let v = TokenValues {
            start: Some(-100),
            end: Some(0),
            ..Default::default()
        };
        assert_eq!(render("{table}_p{START}", "e", &v), "e_pm100");
        let text = |t: &str| TokenValues {
            text: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(render("{table}_p{VALUE}", "e", &text("eu_west")), "e_peu_west");
        let a = render("{table}_p{VALUE}", "e", &text("EU West"));
        let b = render("{table}_p{VALUE}", "e", &text("eu west"));
        assert!(a.starts_with("e_peu_west_") && a != b, "{a} {b}");
    }
}
