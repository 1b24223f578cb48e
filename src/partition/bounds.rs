//! Range bounds, computed in the plan's time zone.
//!
//! Calendar arithmetic happens on local wall-clock time in that zone, and
//! `timestamptz` bounds are written with an explicit UTC offset, so the
//! DDL means the same whatever the server's or the session's time zone.

use super::naming::{render, TokenValues};
use super::Interval;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Most partitions a layout may have; more would slow every query's
/// planning more than partitioning helps.
pub const MAX_PARTITIONS: usize = 2000;

/// The partition key's type, as far as bounds are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    TimestampTz,
    Timestamp,
    Date,
    Integer,
}

impl KeyKind {
    /// The kind of a column of type `t` as `format_type` writes it; a
    /// precision (`timestamp(6) without time zone`, what Rails gives every
    /// datetime) does not change the kind.
    pub fn from_type_name(t: &str) -> Option<KeyKind> {
        let t = match (t.find('('), t.find(')')) {
            (Some(open), Some(close)) if open < close => format!("{}{}", &t[..open], &t[close + 1..]),
            _ => t.to_string(),
        };
        match t.as_str() {
            "timestamp with time zone" => Some(KeyKind::TimestampTz),
            "timestamp without time zone" => Some(KeyKind::Timestamp),
            "date" => Some(KeyKind::Date),
            "smallint" | "integer" | "bigint" => Some(KeyKind::Integer),
            _ => None,
        }
    }

    pub fn is_time(self) -> bool {
        self != KeyKind::Integer
    }
}

/// A key value read from the table or written in the plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyValue {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
    Day(NaiveDate),
    Int(i64),
}

/// One partition of the layout; bounds are SQL literal texts, unquoted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub name: String,
    pub from: String,
    pub to: String,
}

pub struct LayoutInput<'a> {
    pub kind: KeyKind,
    pub interval: Option<Interval>,
    pub step: Option<u64>,
    pub tz: Tz,
    pub start: Option<KeyValue>,
    pub min: Option<KeyValue>,
    pub max: Option<KeyValue>,
    pub now: DateTime<Utc>,
    pub premake: u32,
    pub template: &'a str,
    pub table: &'a str,
}

/// The partitions that cover `[start or floor(min), max]`, the current
/// period, and `premake` periods beyond.
pub fn layout(input: &LayoutInput) -> Result<Vec<Partition>, String> {
    match (input.kind, input.interval, input.step) {
        (KeyKind::Integer, None, Some(step)) => integer_layout(input, step),
        (KeyKind::Integer, Some(_), _) => {
            Err("partition.interval is for date and time keys; an integer key needs partition.step".into())
        }
        (_, Some(interval), None) => time_layout(input, interval),
        (_, _, Some(_)) => {
            Err("partition.step is for integer keys; a date or time key needs partition.interval".into())
        }
        _ => Err("partition needs an interval or a step".into()),
    }
}

fn to_local(v: KeyValue, tz: Tz) -> NaiveDateTime {
    match v {
        KeyValue::Instant(i) => i.with_timezone(&tz).naive_local(),
        KeyValue::Local(l) => l,
        KeyValue::Day(d) => d.and_hms_opt(0, 0, 0).expect("midnight"),
        KeyValue::Int(_) => unreachable!("integer key in a time layout"),
    }
}

fn floor_local(t: NaiveDateTime, interval: Interval) -> NaiveDateTime {
    let d = t.date();
    let day = match interval {
        Interval::Day => d,
        Interval::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        Interval::Month => d.with_day(1).expect("first of month"),
        Interval::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("new year"),
    };
    day.and_hms_opt(0, 0, 0).expect("midnight")
}

fn next_local(t: NaiveDateTime, interval: Interval) -> Option<NaiveDateTime> {
    match interval {
        Interval::Day => t.checked_add_signed(Duration::days(1)),
        Interval::Week => t.checked_add_signed(Duration::days(7)),
        Interval::Month => t.checked_add_months(Months::new(1)),
        Interval::Year => t.checked_add_months(Months::new(12)),
    }
}

/// The instant at which a local midnight happens. Where a daylight-saving
/// change skips midnight (some zones do), the first instant after the gap.
fn local_instant(tz: Tz, t: NaiveDateTime) -> DateTime<Tz> {
    let mut probe = t;
    for _ in 0..48 {
        if let Some(i) = tz.from_local_datetime(&probe).earliest() {
            return i;
        }
        probe += Duration::minutes(30);
    }
    tz.from_utc_datetime(&t)
}

fn render_bound(kind: KeyKind, tz: Tz, t: NaiveDateTime) -> String {
    match kind {
        KeyKind::TimestampTz => local_instant(tz, t).format("%Y-%m-%d %H:%M:%S%:z").to_string(),
        KeyKind::Timestamp => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        KeyKind::Date => t.date().format("%Y-%m-%d").to_string(),
        KeyKind::Integer => unreachable!(),
    }
}

fn time_layout(input: &LayoutInput, interval: Interval) -> Result<Vec<Partition>, String> {
    let tz = input.tz;
    let first = match input.start {
        Some(s) => {
            let local = to_local(s, tz);
            if floor_local(local, interval) != local {
                return Err(format!(
                    "partition.start {} is not the beginning of a {:?} in {}; use {}",
                    local,
                    interval,
                    tz,
                    floor_local(local, interval)
                )
                .to_lowercase());
            }
            local
        }
        None => floor_local(
            to_local(input.min.unwrap_or(KeyValue::Instant(input.now)), tz),
            interval,
        ),
    };
    let now_local = input.now.with_timezone(&tz).naive_local();
    let mut cover = now_local;
    if let Some(max) = input.max {
        cover = cover.max(to_local(max, tz));
    }
    let mut out = Vec::new();
    let mut lower = first;
    let mut extra = 0;
    loop {
        let upper = next_local(lower, interval).ok_or("the partition bounds run past the calendar")?;
        let date = lower.date();
        out.push(Partition {
            name: render(
                input.template,
                input.table,
                &TokenValues {
                    date: Some(date),
                    ..Default::default()
                },
            ),
            from: render_bound(input.kind, tz, lower),
            to: render_bound(input.kind, tz, upper),
        });
        if out.len() > MAX_PARTITIONS {
            return Err(format!(
                "the layout would need more than {MAX_PARTITIONS} partitions; choose a longer interval or a later start"
            ));
        }
        lower = upper;
        if lower > cover {
            if extra >= input.premake {
                break;
            }
            extra += 1;
        }
    }
    Ok(out)
}

fn integer_layout(input: &LayoutInput, step: u64) -> Result<Vec<Partition>, String> {
    let step = i64::try_from(step).map_err(|_| "partition.step is too large")?;
    let int = |v: Option<KeyValue>| match v {
        Some(KeyValue::Int(n)) => Some(n),
        _ => None,
    };
    let first = match int(input.start) {
        Some(s) => s,
        None => int(input.min).unwrap_or(0).div_euclid(step) * step,
    };
    let cover = int(input.max).unwrap_or(first);
    let mut out = Vec::new();
    let mut lower = first;
    let mut extra = 0;
    loop {
        let upper = lower
            .checked_add(step)
            .ok_or("the partition bounds overflow a bigint")?;
        out.push(Partition {
            name: render(
                input.template,
                input.table,
                &TokenValues {
                    start: Some(lower),
                    end: Some(upper),
                    ..Default::default()
                },
            ),
            from: lower.to_string(),
            to: upper.to_string(),
        });
        if out.len() > MAX_PARTITIONS {
            return Err(format!(
                "the layout would need more than {MAX_PARTITIONS} partitions; choose a larger step or a later start"
            ));
        }
        lower = upper;
        if lower > cover {
            if extra >= input.premake {
                break;
            }
            extra += 1;
        }
    }
    Ok(out)
}

/// A first bound as a plan writes it: a date or timestamp string, or an
/// integer.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(untagged)]
pub enum Written {
    Integer(i64),
    Text(String),
}

/// Parses `partition.start` as written in the plan, for a key kind.
pub fn parse_start(kind: KeyKind, tz: Tz, b: &Written) -> Result<KeyValue, String> {
    use Written as Bound;
    match (kind, b) {
        (KeyKind::Integer, Bound::Integer(n)) => Ok(KeyValue::Int(*n)),
        (KeyKind::Integer, Bound::Text(t)) => Err(format!("`{t}` is not an integer, and the key is an integer column")),
        (_, Bound::Integer(n)) => Err(format!("`{n}` is not a date, and the key is a date or time column")),
        (kind, Bound::Text(t)) => {
            let local = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
                })
                .map_err(|_| format!("`{t}` is not a date (YYYY-MM-DD) or local time (YYYY-MM-DD HH:MM:SS)"))?;
            Ok(match kind {
                KeyKind::TimestampTz => KeyValue::Instant(local_instant(tz, local).with_timezone(&Utc)),
                KeyKind::Timestamp => KeyValue::Local(local),
                _ => KeyValue::Day(local.date()),
            })
        }
    }
}

/// A partition's lower bound as a key value.
pub fn first_bound_value(kind: KeyKind, tz: Tz, p: &Partition) -> Option<KeyValue> {
    bound_value(kind, tz, &p.from)
}

/// A bound written by this module, read back as a key value.
pub fn bound_value(kind: KeyKind, tz: Tz, text: &str) -> Option<KeyValue> {
    let _ = tz;
    match kind {
        KeyKind::Integer => text.parse().ok().map(KeyValue::Int),
        KeyKind::TimestampTz => DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%:z")
            .ok()
            .map(|d| KeyValue::Instant(d.with_timezone(&Utc))),
        KeyKind::Timestamp => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(KeyValue::Local),
        KeyKind::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(KeyValue::Day),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precision_does_not_change_the_kind_of_key() {
        assert_eq!(
            KeyKind::from_type_name("timestamp(6) without time zone"),
            Some(KeyKind::Timestamp)
        );
        assert_eq!(
            KeyKind::from_type_name("timestamp(3) with time zone"),
            Some(KeyKind::TimestampTz)
        );
        assert_eq!(KeyKind::from_type_name("numeric(10,2)"), None);
    }

    fn input<'a>(
        kind: KeyKind,
        interval: Option<Interval>,
        tz: Tz,
        min: Option<KeyValue>,
        max: Option<KeyValue>,
        now: DateTime<Utc>,
    ) -> LayoutInput<'a> {
        LayoutInput {
            kind,
            interval,
            step: None,
            tz,
            start: None,
            min,
            max,
            now,
            premake: 2,
            template: "{table}_y{YYYY}m{MM}",
            table: "ev",
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn monthly_utc_covers_min_now_and_premake() {
        let i = input(
            KeyKind::TimestampTz,
            Some(Interval::Month),
            chrono_tz::UTC,
            Some(KeyValue::Instant(utc("2025-01-15T10:00:00Z"))),
            Some(KeyValue::Instant(utc("2025-03-02T00:00:00Z"))),
            utc("2025-03-10T00:00:00Z"),
        );
        let parts = layout(&i).unwrap();
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ev_y2025m01",
                "ev_y2025m02",
                "ev_y2025m03",
                "ev_y2025m04",
                "ev_y2025m05"
            ]
        );
        assert_eq!(parts[0].from, "2025-01-01 00:00:00+00:00");
        assert_eq!(parts[4].to, "2025-06-01 00:00:00+00:00");
        for w in parts.windows(2) {
            assert_eq!(w[0].to, w[1].from, "no gaps");
        }
    }

    #[test]
    fn daylight_saving_changes_keep_local_midnight() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let mut i = input(
            KeyKind::TimestampTz,
            Some(Interval::Day),
            berlin,
            Some(KeyValue::Instant(utc("2025-03-29T12:00:00Z"))),
            None,
            utc("2025-03-31T12:00:00Z"),
        );
        i.template = "{table}_p{YYYY}{MM}{DD}";
        i.premake = 0;
        let parts = layout(&i).unwrap();
        assert_eq!(parts[0].from, "2025-03-29 00:00:00+01:00");
        assert_eq!(parts[1].from, "2025-03-30 00:00:00+01:00");
        assert_eq!(parts[2].from, "2025-03-31 00:00:00+02:00");
        assert_eq!(parts[2].name, "ev_p20250331");
    }

    #[test]
    fn midnight_skipped_by_dst_uses_first_instant_after() {
        // Santiago skipped 2024-09-08 00:00 local.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let t = NaiveDate::from_ymd_opt(2024, 9, 8)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(render_bound(KeyKind::TimestampTz, tz, t), "2024-09-08 01:00:00-03:00");
    }

    #[test]
    fn weeks_start_on_monday_and_integer_steps() {
        let mut i = input(
            KeyKind::Date,
            Some(Interval::Week),
            chrono_tz::UTC,
            Some(KeyValue::Day(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap())),
            None,
            utc("2025-01-01T00:00:00Z"),
        );
        i.premake = 0;
        i.template = "{table}_p{IYYY}w{IW}";
        let parts = layout(&i).unwrap();
        assert_eq!(parts[0].from, "2024-12-30");
        assert_eq!(parts[0].name, "ev_p2025w01");

        let mut i = input(
            KeyKind::Integer,
            None,
            chrono_tz::UTC,
            Some(KeyValue::Int(-5)),
            Some(KeyValue::Int(2500)),
            utc("2025-01-01T00:00:00Z"),
        );
        i.step = Some(1000);
        i.premake = 1;
        i.template = "{table}_p{START}";
        let parts = layout(&i).unwrap();
        let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ev_pm1000", "ev_p0", "ev_p1000", "ev_p2000", "ev_p3000"]);
    }

    #[test]
    fn unaligned_start_is_refused_and_too_many_partitions_too() {
        let mut i = input(
            KeyKind::TimestampTz,
            Some(Interval::Month),
            chrono_tz::UTC,
            None,
            None,
            utc("2025-01-01T00:00:00Z"),
        );
        i.start = Some(
            parse_start(
                KeyKind::TimestampTz,
                chrono_tz::UTC,
                &Written::Text("2025-01-15".into()),
            )
            .unwrap(),
        );
        assert!(layout(&i).unwrap_err().contains("not the beginning"));
        let mut i = input(
            KeyKind::TimestampTz,
            Some(Interval::Day),
            chrono_tz::UTC,
            Some(KeyValue::Instant(utc("2000-01-01T00:00:00Z"))),
            None,
            utc("2025-01-01T00:00:00Z"),
        );
        i.premake = 0;
        assert!(layout(&i).unwrap_err().contains("more than"));
    }
}
