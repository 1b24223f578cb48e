//! The partitions a table has now, with bounds read back as key values, so
//! that maintenance compares them with the layout the plan describes.

use super::bounds::{KeyKind, KeyValue};
use crate::sql::QualifiedName;
use anyhow::Result;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tokio_postgres::Client;

#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Min,
    Max,
    Value(KeyValue),
}

#[derive(Clone, Debug)]
pub struct Existing {
    pub name: QualifiedName,
    pub expr: String,
    pub default: bool,
    /// Range partitions: lower and upper bound.
    pub range: Option<(Bound, Bound)>,
    /// List partitions of an integer key: their values.
    pub values: Vec<i64>,
    /// An interrupted DETACH ... CONCURRENTLY left it pending.
    pub detach_pending: bool,
}

fn parse_value(kind: KeyKind, text: &str) -> Option<Bound> {
    let t = text.trim();
    match t {
        "MINVALUE" => return Some(Bound::Min),
        "MAXVALUE" => return Some(Bound::Max),
        _ => {}
    }
    let t = t.trim_matches('\'');
    let v = match kind {
        KeyKind::Integer => KeyValue::Int(t.parse().ok()?),
        KeyKind::TimestampTz => KeyValue::Instant(
            DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z")
                .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%#z"))
                .ok()?
                .with_timezone(&Utc),
        ),
        KeyKind::Timestamp => KeyValue::Local(
            NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S"))
                .ok()?,
        ),
        KeyKind::Date => KeyValue::Day(NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?),
    };
    Some(Bound::Value(v))
}

/// `FOR VALUES FROM (a) TO (b)` as bounds.
pub fn parse_range(kind: KeyKind, expr: &str) -> Option<(Bound, Bound)> {
    let rest = expr.strip_prefix("FOR VALUES FROM (")?;
    let (from, to) = rest.split_once(") TO (")?;
    let to = to.strip_suffix(')')?;
    Some((parse_value(kind, from)?, parse_value(kind, to)?))
}

/// The lowest and highest key in `rel` itself (not its partitions).
pub async fn min_max(
    client: &Client,
    rel: &QualifiedName,
    column: &crate::sql::Ident,
    kind: KeyKind,
) -> Result<(Option<KeyValue>, Option<KeyValue>)> {
    let sql = match kind {
        KeyKind::Integer => format!("SELECT min({column})::int8, max({column})::int8 FROM ONLY {rel}"),
        _ => format!("SELECT min({column}), max({column}) FROM ONLY {rel}"),
    };
    let r = client.query_one(&sql, &[]).await?;
    Ok(match kind {
        KeyKind::TimestampTz => {
            let f = |v: Option<DateTime<Utc>>| v.map(KeyValue::Instant);
            (f(r.get(0)), f(r.get(1)))
        }
        KeyKind::Timestamp => {
            let f = |v: Option<NaiveDateTime>| v.map(KeyValue::Local);
            (f(r.get(0)), f(r.get(1)))
        }
        KeyKind::Date => {
            let f = |v: Option<NaiveDate>| v.map(KeyValue::Day);
            (f(r.get(0)), f(r.get(1)))
        }
        KeyKind::Integer => {
            let f = |v: Option<i64>| v.map(KeyValue::Int);
            (f(r.get(0)), f(r.get(1)))
        }
    })
}

/// `FOR VALUES IN ('1', '2')` as integers (NULL is left out).
pub fn parse_list(expr: &str) -> Vec<i64> {
    expr.strip_prefix("FOR VALUES IN (")
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| {
            inner
                .split(',')
                .filter_map(|v| v.trim().trim_matches('\'').parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The leaf partitions of `table`, in bound order where known.
pub async fn partitions(client: &Client, table: &QualifiedName, kind: KeyKind) -> Result<Vec<Existing>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.inhparent = to_regclass($1) ORDER BY c.relname",
            &[&table.to_string()],
        )
        .await?;
    let mut out: Vec<Existing> = rows
        .iter()
        .map(|r| {
            let expr: String = r.get(2);
            Existing {
                name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                default: expr == "DEFAULT",
                range: parse_range(kind, &expr),
                values: parse_list(&expr),
                expr,
                detach_pending: r.get(3),
            }
        })
        .collect();
    out.sort_by(lower_order);
    Ok(out)
}

fn lower_order(a: &Existing, b: &Existing) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (&a.range, &b.range) {
        (Some((x, _)), Some((y, _))) => {
            if less(x, y) {
                Less
            } else if less(y, x) {
                Greater
            } else {
                Equal
            }
        }
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

/// Strict order of bounds.
pub fn less(a: &Bound, b: &Bound) -> bool {
    match (a, b) {
        (Bound::Min, Bound::Min) | (Bound::Max, Bound::Max) => false,
        (Bound::Min, _) | (_, Bound::Max) => true,
        (_, Bound::Min) | (Bound::Max, _) => false,
        (Bound::Value(x), Bound::Value(y)) => value_less(*x, *y),
    }
}

pub fn value_less(a: KeyValue, b: KeyValue) -> bool {
    match (a, b) {
        (KeyValue::Instant(a), KeyValue::Instant(b)) => a < b,
        (KeyValue::Local(a), KeyValue::Local(b)) => a < b,
        (KeyValue::Day(a), KeyValue::Day(b)) => a < b,
        (KeyValue::Int(a), KeyValue::Int(b)) => a < b,
        _ => false,
    }
}

/// Whether [a1, a2) and [b1, b2) overlap.
pub fn overlaps(a: &(Bound, Bound), b: &(Bound, Bound)) -> bool {
    less(&a.0, &b.1) && less(&b.0, &a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_list_values_as_postgres_prints_them() {
        assert_eq!(parse_list("FOR VALUES IN ('100')"), vec![100]);
        assert_eq!(parse_list("FOR VALUES IN ('-3', '7', NULL)"), vec![-3, 7]);
        assert!(parse_list("DEFAULT").is_empty());
    }

    #[test]
    fn reads_bounds_as_postgres_prints_them() {
        let r = parse_range(
            KeyKind::TimestampTz,
            "FOR VALUES FROM ('2026-10-01 00:00:00+00') TO ('2026-11-01 00:00:00+00')",
        )
        .unwrap();
        let (Bound::Value(KeyValue::Instant(a)), Bound::Value(KeyValue::Instant(b))) = r else {
            panic!()
        };
        assert_eq!(a.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        let r = parse_range(
            KeyKind::TimestampTz,
            "FOR VALUES FROM (MINVALUE) TO ('2026-12-01 00:00:00+01')",
        )
        .unwrap();
        assert_eq!(r.0, Bound::Min);
        let r = parse_range(KeyKind::Integer, "FOR VALUES FROM ('0') TO ('100')").unwrap();
        assert_eq!(r, (Bound::Value(KeyValue::Int(0)), Bound::Value(KeyValue::Int(100))));
        assert!(parse_range(KeyKind::Integer, "DEFAULT").is_none());
        assert!(overlaps(&r, &(Bound::Value(KeyValue::Int(99)), Bound::Max)));
        assert!(!overlaps(&r, &(Bound::Value(KeyValue::Int(100)), Bound::Max)));
    }
}
