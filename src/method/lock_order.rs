//! No transaction of the tool takes a lock on a relation and later, in the
//! same transaction, a stronger one. An upgrade from SHARE ROW EXCLUSIVE
//! to ACCESS EXCLUSIVE waits for an application session holding a row lock
//! (`SELECT ... FOR UPDATE`) while blocking that session's next write: a
//! deadlock the application never had. Each transaction's explicit `LOCK`
//! must already be in the mode its later DDL on that relation needs.

use crate::blueprint::derive::{derive, fixtures::*};
use crate::method::{self, How, Step};
use crate::sql::Statement;

/// DDL that takes ACCESS EXCLUSIVE on `rel` (PostgreSQL's own choice of
/// lock for these commands).
fn needs_access_exclusive(sql: &str, rel: &str) -> bool {
    let on = sql.contains(&format!(" ON {rel} ")) || sql.ends_with(&format!(" ON {rel}"));
    ((sql.starts_with("CREATE POLICY") || sql.starts_with("DROP POLICY") || sql.starts_with("DROP TRIGGER")) && on)
        || sql.starts_with(&format!("ALTER TABLE {rel} RENAME"))
        || (sql.starts_with(&format!("ALTER TABLE {rel} ")) && sql.ends_with("ROW LEVEL SECURITY"))
        || sql == format!("DROP TABLE {rel}")
        || sql == format!("DROP TABLE IF EXISTS {rel}")
}

/// `(relations, mode)` of a `LOCK TABLE a, b IN MODE MODE` statement.
fn lock_of(sql: &str) -> Option<(Vec<String>, String)> {
    let rest = sql.strip_prefix("LOCK TABLE ")?;
    let (rels, mode) = rest.split_once(" IN ")?;
    let mode = mode.strip_suffix(" MODE")?;
    Some((rels.split(", ").map(str::to_string).collect(), mode.to_string()))
}

/// The upgrades in one transaction's statements, as sentences.
fn upgrades(stmts: &[Statement]) -> Vec<String> {
    let mut held: Vec<(String, String)> = Vec::new();
    let mut found = Vec::new();
    for st in stmts {
        if let Some((rels, mode)) = lock_of(&st.sql) {
            for r in rels {
                if !held.iter().any(|(h, _)| *h == r) {
                    held.push((r, mode.clone()));
                }
            }
            continue;
        }
        for (rel, mode) in &held {
            if mode != "ACCESS EXCLUSIVE" && needs_access_exclusive(&st.sql, rel) {
                found.push(format!("{rel} locked in {mode}, then: {}", st.sql));
            }
        }
    }
    found
}

fn transactions(steps: &[Step]) -> Vec<(&'static str, &[Statement])> {
    steps
        .iter()
        .flat_map(|s| s.parts.iter().map(move |p| (s.name, p)))
        .filter(|(_, p)| matches!(p.how, How::Transaction | How::Batches))
        .map(|(n, p)| (n, p.statements.as_slice()))
        .collect()
}

#[test]
fn the_checker_finds_an_upgrade() {
    let stmts = [
        Statement::new("a", "LOCK TABLE \"public\".\"t\" IN SHARE ROW EXCLUSIVE MODE"),
        Statement::new(
            "b",
            "CREATE TRIGGER x AFTER INSERT ON \"public\".\"t\" FOR EACH ROW EXECUTE FUNCTION f()",
        ),
        Statement::new(
            "c",
            "CREATE POLICY \"t__tool\" ON \"public\".\"t\" AS PERMISSIVE FOR ALL TO \"o\" USING (true)",
        ),
    ];
    assert_eq!(upgrades(&stmts).len(), 1);
    assert!(upgrades(&stmts[..2]).is_empty());
}

#[test]
fn no_transaction_upgrades_a_lock() {
    let mut weaker_locks = 0;
    for method_name in ["move", "sync", "attach"] {
        for row_security in [false, true] {
            let mut partition = MONTHLY.to_string();
            let mut f = if row_security {
                partition.push_str("  default_partition: true\n");
                let mut f = facts(forced_row_security(table("public", "events")));
                f.access = Some(owner_without_bypass());
                f
            } else {
                facts(table("public", "events"))
            };
            f.server.version_num = 170_000;
            let bp = derive(&plan("public.events", method_name, &partition), &f)
                .unwrap()
                .blueprint;
            if row_security && method_name != "attach" {
                assert!(bp.row_security.tool_role.is_some(), "{method_name}");
            }
            let mut all = method::steps(&bp);
            all.extend(method::abort_steps(&bp));
            all.extend(method::extras(&bp).into_iter().flat_map(|e| e.steps));
            for (step, stmts) in transactions(&all) {
                weaker_locks += stmts
                    .iter()
                    .filter_map(|s| lock_of(&s.sql))
                    .filter(|(_, m)| m != "ACCESS EXCLUSIVE")
                    .count();
                let found = upgrades(stmts);
                assert!(
                    found.is_empty(),
                    "{method_name} (row security {row_security}), step {step}: {found:#?}"
                );
            }
        }
    }
    // The check saw the transactions that lock in a weaker mode.
    assert!(weaker_locks > 0);
}
