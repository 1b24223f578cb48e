//! The derivation on facts written by hand: no database.

use super::fixtures::*;
use super::*;
use crate::blueprint::IndexBody;

fn refusal(r: Result<Resolved>) -> String {
    match r {
        Ok(_) => panic!("derivation did not refuse"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_monthly_move_covers_the_keys_and_premakes_ahead() {
    let p = plan("'\"odd schema\".\"Event Log\"'", "move", MONTHLY);
    let r = derive(&p, &facts(table("odd schema", "Event Log"))).unwrap();
    let bp = &r.blueprint;
    assert_eq!(bp.shadow.to_string(), "\"odd schema\".\"Event Log__part\"");
    assert_eq!(bp.old.to_string(), "\"odd schema\".\"Event Log__orig\"");
    assert_eq!(bp.partitions.first().unwrap().from, "2026-03-01 00:00:00+00:00");
    // March to June hold rows; the plan's default premake goes beyond.
    assert!(bp.partitions.len() >= 4, "{:?}", bp.partitions);
    assert_eq!(bp.uniques[0].columns, vec![id("id"), id("ts")]);
    assert!(bp.uniques[0].key_appended);
    assert_eq!(bp.row_identity, vec![id("id")]);
    assert!(matches!(bp.indexes[0].body, IndexBody::Plain(_)));
    assert_eq!(bp.sequences.len(), 1);
    assert_eq!(bp.dependent_views.len(), 1);
    assert!(r
        .findings
        .iter()
        .any(|f| f.level == Level::Warning && f.message.contains("uniqueness of (\"id\") alone")));
    // The lock timeout stays under half the deadlock timeout.
    assert!(bp.settings.lock_timeout_ms <= 500);
}

#[test]
fn what_the_tool_cannot_carry_is_refused_with_every_reason() {
    let mut info = table("public", "events");
    info.columns[0].identity = true;
    info.constraints.clear();
    let p = plan("public.events", "sync", MONTHLY);
    let e = refusal(derive(&p, &facts(info)));
    assert!(e.contains("column \"id\" is an identity column"), "{e}");
    assert!(
        e.contains("has no primary key or unique key on NOT NULL columns, which the sync method's mirror needs"),
        "{e}"
    );
}

#[test]
fn old_servers_missing_tables_and_views_are_refused_first() {
    let p = plan("public.events", "move", MONTHLY);
    let mut f = facts(table("public", "events"));
    f.server.version_num = 130_011;
    assert!(refusal(derive(&p, &f)).contains("needs 14 or newer"));
    let mut f = facts(table("public", "events"));
    f.info = None;
    let e = refusal(derive(&p, &f));
    assert!(
        e.contains("table (line 1) names \"public\".\"events\", which does not exist"),
        "{e}"
    );
    let mut info = table("public", "events");
    info.relkind = "v".into();
    assert!(refusal(derive(&p, &facts(info))).contains("is a view, not a table"));
}

#[test]
fn rows_below_the_first_bound_need_a_default_partition() {
    let part = "  by: range\n  column: ts\n  interval: month\n  start: 2026-05-01\n";
    let mut f = facts(table("public", "events"));
    f.below_first = 42;
    let e = refusal(derive(&plan("public.events", "move", part), &f));
    assert!(e.contains("42 existing rows have keys below the first bound"), "{e}");
    let part = format!("{part}  default_partition: true\n");
    let r = derive(&plan("public.events", "move", &part), &f).unwrap();
    assert!(r.blueprint.default_partition.is_some());
    assert!(r
        .findings
        .iter()
        .any(|x| x.message.contains("will land in the default partition")));
    // The draft asks the catalog about rows below the first bound.
    let d = draft(&plan("public.events", "move", &part), &f).unwrap();
    assert_eq!(d.below.as_deref(), Some("2026-05-01 00:00:00+00:00"));
}

#[test]
fn names_taken_are_refused_and_the_draft_lists_what_it_creates() {
    let p = plan("public.events", "sync", MONTHLY);
    let f = facts(table("public", "events"));
    let d = draft(&p, &f).unwrap();
    let rels: Vec<String> = d.relations.iter().map(|r| r.to_string()).collect();
    assert!(rels.contains(&"\"public\".\"events__part\"".to_string()));
    assert!(rels.contains(&"\"public\".\"events__retired\"".to_string()));
    // Sync builds each partition's indexes after the copy: their names too.
    assert!(rels.iter().any(|r| r.ends_with("_1_idx\"")), "{rels:?}");
    assert!(d.functions.iter().any(|f| f.to_string().ends_with("__mirror\"")));
    let mut f = f;
    f.taken = vec!["\"public\".\"events__part\"".into()];
    assert!(refusal(derive(&p, &f)).contains("names the migration needs are taken already"));
}

#[test]
fn list_keys_get_a_partition_per_value_and_hash_keys_one_per_remainder() {
    let mut f = facts(table("public", "events"));
    f.min = None;
    f.max = None;
    f.list_values = vec![1, 2, 5];
    let r = derive(
        &plan("public.events", "move", "  by: list\n  column: Kind\n  premake: 2\n"),
        &f,
    )
    .unwrap();
    let values: Vec<&str> = r.blueprint.partitions.iter().map(|p| p.from.as_str()).collect();
    assert_eq!(values, ["1", "2", "5", "6", "7"]);
    let r = derive(
        &plan("public.events", "sync", "  by: hash\n  column: id\n  modulus: 4\n"),
        &f,
    )
    .unwrap();
    assert_eq!(r.blueprint.partitions.len(), 4);
    assert_eq!(r.blueprint.key.hash, Some(4));
}

#[test]
fn attach_cuts_off_after_the_newest_key_and_refuses_keys_beyond_a_given_cutoff() {
    let f = facts(table("public", "events"));
    let r = derive(&plan("public.events", "attach", MONTHLY), &f).unwrap();
    let a = r.blueprint.attach.as_ref().unwrap();
    assert_eq!(a.cutoff, "2026-07-01 00:00:00+00:00");
    assert_eq!(a.key_indexes.len(), 1);
    assert_eq!(r.blueprint.old.to_string(), "\"public\".\"events_p0\"");
    let p = PlanFile::parse(
        "p.yaml",
        &format!("table: public.events\npartition:\n{MONTHLY}method: attach\nattach:\n  cutoff: 2026-05-01\n"),
    )
    .unwrap();
    let e = refusal(derive(&p, &f));
    assert!(e.contains("existing rows have keys at or after the cutoff"), "{e}");
}

#[test]
fn row_security_is_carried_and_refused_only_where_it_cannot_hold() {
    let mut info = table("public", "events");
    info.row_security = true;
    info.force_row_security = true;
    info.policies = vec![crate::catalog::PolicyInfo {
        name: id("tenant"),
        permissive: true,
        command: '*',
        roles: vec![Some("app".into())],
        using: Some("(tenant = 1)".into()),
        check: None,
    }];
    for method in ["sync", "attach", "move"] {
        let bp = derive(&plan("public.events", method, MONTHLY), &facts(info.clone()))
            .unwrap()
            .blueprint;
        assert!(bp.row_security.enabled && bp.row_security.forced, "{method}");
        assert_eq!(bp.row_security.policies.len(), 1, "{method}");
    }
    let mut f = facts(info.clone());
    f.server.version_num = 140_011;
    let e = refusal(derive(&plan("public.events", "move", MONTHLY), &f));
    assert!(e.contains("use method sync or attach"), "{e}");
    let mut f = facts(info);
    f.access = Some(crate::access::AccessFacts {
        bypass_rls: false,
        ..Default::default()
    });
    let e = refusal(derive(&plan("public.events", "sync", MONTHLY), &f));
    assert!(e.contains("run the migration as a role with BYPASSRLS"), "{e}");
}
