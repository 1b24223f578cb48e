//! The derivation on facts written by hand: no database.

use super::fixtures::*;
use super::*;
use crate::blueprint::IndexBody;
use crate::findings::Level;

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
    assert!(r.findings.iter().any(|f| f.level == Level::Warning
        && f.code == crate::findings::codes::PK_GAINS_PARTITION_KEY
        && f.message.contains("uniqueness of (\"id\") alone")));
    // Every warning has a code a plan may accept.
    for f in &r.findings {
        assert!(
            f.level == Level::Note || crate::findings::codes::acceptable(f.code),
            "{f:?}"
        );
    }
    // The lock timeout stays under half the deadlock timeout.
    assert!(bp.settings.lock_timeout_ms <= 500);
}

#[test]
fn what_the_tool_cannot_carry_is_refused_with_every_reason() {
    let mut info = table("public", "events");
    info.rules = vec!["redirect".into()];
    info.constraints.clear();
    let p = plan("public.events", "sync", MONTHLY);
    let e = refusal(derive(&p, &facts(info)));
    assert!(e.contains("has rules (redirect)"), "{e}");
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

/// An events table with a text list key `region`, facts of a list.
fn with_region(initial: Result<&str, &str>) -> Facts {
    let mut info = table("public", "events");
    info.columns.push(column("region", "text"));
    let mut f = facts(info);
    f.min = None;
    f.max = None;
    f.list_initial = Some(initial.map(str::to_string).map_err(str::to_string));
    f
}

#[test]
fn attach_by_a_text_list_makes_the_original_the_partition_of_initial() {
    let part = "  by: list\n  column: region\n  initial: \"eu'west\"\n";
    let r = derive(&plan("public.events", "attach", part), &with_region(Ok("eu'west"))).unwrap();
    let bp = &r.blueprint;
    assert!(bp.key.list_text);
    assert_eq!(bp.attach.as_ref().unwrap().cutoff, "eu'west");
    assert_eq!(bp.attach.as_ref().unwrap().add_column, None);
    // Named as move and sync name a text value: cleaned, with a hash.
    assert!(bp.old.name.as_str().starts_with("events_peu_west_"), "{}", bp.old);
    assert!(bp.partitions.is_empty(), "{:?}", bp.partitions);
    assert!(bp.default_partition.is_none());
    assert!(r
        .findings
        .iter()
        .any(|f| f.level == Level::Warning && f.message.contains("set partition.default_partition: true")));
    let with_default = format!("{part}  default_partition: true\n");
    let r = derive(
        &plan("public.events", "attach", &with_default),
        &with_region(Ok("eu'west")),
    )
    .unwrap();
    assert!(r.blueprint.default_partition.is_some());
    assert!(!r
        .findings
        .iter()
        .any(|f| f.message.contains("no partition is made ahead")));
    // Rows of other values (or NULL) keep the original from being that one
    // partition.
    let mut f = with_region(Ok("eu'west"));
    f.other_values = 3;
    let e = refusal(derive(&plan("public.events", "attach", part), &f));
    assert!(e.contains("3 existing rows have \"region\" other than eu'west"), "{e}");
}

#[test]
fn a_list_initial_the_key_cannot_take_is_the_plans_mistake() {
    let part = "  by: list\n  column: region\n  initial: mars\n";
    let e = refusal(derive(
        &plan("public.events", "attach", part),
        &with_region(Err("invalid input value for enum region: \"mars\"")),
    ));
    assert!(
        e.contains("partition.initial (line 5) is `mars`, which \"region\" of type text does not take: invalid input value for enum region"),
        "{e}"
    );
    // An integer key takes integers (and strings of digits) only.
    let mut f = facts(table("public", "events"));
    f.min = None;
    f.max = None;
    let e = refusal(derive(
        &plan("public.events", "attach", "  by: list\n  column: Kind\n  initial: eu\n"),
        &f,
    ));
    assert!(
        e.contains("partition.initial (line 5) is `eu`, and \"Kind\" is integer; give an integer"),
        "{e}"
    );
    let r = derive(
        &plan(
            "public.events",
            "attach",
            "  by: list\n  column: Kind\n  initial: '7'\n",
        ),
        &f,
    )
    .unwrap();
    assert_eq!(r.blueprint.attach.unwrap().cutoff, "7");
    // A missing column is added as bigint only.
    let e = refusal(derive(
        &plan(
            "public.events",
            "attach",
            "  by: list\n  column: tenant\n  initial: eu\n",
        ),
        &f,
    ));
    assert!(
        e.contains("partition.initial (line 5) is the string `eu`, and \"public\".\"events\" has no column `tenant`"),
        "{e}"
    );
}

#[test]
fn row_security_is_carried_and_refused_only_where_it_cannot_hold() {
    let info = forced_row_security(table("public", "events"));
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
    // FORCE binds a tool's role without BYPASSRLS: move and sync give it a
    // policy of its own, attach reads no row and needs none.
    let mut f = facts(info.clone());
    f.access = Some(owner_without_bypass());
    // Without a default partition a row `plan` could not see might find
    // no partition.
    let e = refusal(derive(&plan("public.events", "sync", MONTHLY), &f));
    assert!(e.contains("set partition.default_partition: true"), "{e}");
    let with_default = format!("{MONTHLY}  default_partition: true\n");
    for method in ["sync", "move"] {
        let r = derive(&plan("public.events", method, &with_default), &f).unwrap();
        assert_eq!(r.blueprint.row_security.tool_role.as_deref(), Some("owner"), "{method}");
        assert!(
            r.findings
                .iter()
                .any(|x| x.code == crate::findings::codes::ROW_SECURITY_TOOL_POLICY),
            "{method}: {:?}",
            r.findings
        );
    }
    let r = derive(&plan("public.events", "attach", MONTHLY), &f).unwrap();
    assert_eq!(r.blueprint.row_security.tool_role, None);
    // The split reads the first partition, whose own policies bind it.
    assert!(r.split.is_none());
    // A restrictive policy would still filter the tool: refused.
    let mut restricted = info;
    restricted.policies[0].permissive = false;
    let mut f = facts(restricted);
    f.access = Some(owner_without_bypass());
    let e = refusal(derive(&plan("public.events", "sync", &with_default), &f));
    assert!(
        e.contains("restrictive policies \"tenant\"") && e.contains("run the migration as a role with BYPASSRLS"),
        "{e}"
    );
}

/// The events table with `id` GENERATED ALWAYS AS IDENTITY instead of a
/// serial default.
fn identity_table() -> crate::catalog::TableInfo {
    let mut info = table("public", "events");
    info.columns[0].default = None;
    info.columns[0].identity = true;
    info.sequences.clear();
    info.identities = vec![crate::catalog::IdentityInfo {
        column: id("id"),
        always: true,
        sequence: qn("public", "events_id_seq"),
        increment: 1,
        min: 1,
        max: i64::MAX,
        cache: 1,
        cycle: false,
        usage: Vec::new(),
    }];
    info
}

#[test]
fn an_identity_is_carried_and_plan_says_how() {
    for method in ["move", "sync", "attach"] {
        let r = derive(&plan("public.events", method, MONTHLY), &facts(identity_table())).unwrap();
        let bp = &r.blueprint;
        assert_eq!(bp.identities.len(), 1, "{method}");
        assert_eq!(
            bp.identities[0].stepped_aside.to_string().replace('"', ""),
            "public.events_id_seq__o"
        );
        assert!(bp.has_always_identity());
        // The routing view's default draws from the identity's sequence.
        assert_eq!(
            bp.columns[0].default.as_deref().map(|d| d.replace('"', "")),
            Some("nextval('public.events_id_seq'::regclass)".to_string())
        );
        let note = r
            .findings
            .iter()
            .find(|f| f.message.contains("GENERATED ALWAYS AS IDENTITY"))
            .unwrap_or_else(|| panic!("{method}: no finding on the identity"));
        assert!(
            note.message.replace('"', "").contains("sequence public.events_id_seq"),
            "{}",
            note.message
        );
        assert!(note.message.contains("PostgreSQL 14 to 16"), "{}", note.message);
    }
    let mut f = facts(identity_table());
    f.server.version_num = 170_002;
    let r = derive(&plan("public.events", "move", MONTHLY), &f).unwrap();
    assert!(!r.findings.iter().any(|f| f.message.contains("PostgreSQL 14 to 16")));
}

#[test]
fn an_identity_always_is_never_set_and_its_copies_override_it() {
    use crate::method::{moving, sync};
    let text = |v: Vec<crate::sql::Statement>| v.iter().map(|s| s.sql.replace('"', "")).collect::<Vec<_>>().join(";\n");
    let bp = derive(&plan("public.events", "move", MONTHLY), &facts(identity_table()))
        .unwrap()
        .blueprint;
    let route = text(moving::sql::route(&bp));
    assert!(
        route
            .contains("ALTER VIEW public.events ALTER COLUMN id SET DEFAULT nextval('public.events_id_seq'::regclass)"),
        "{route}"
    );
    assert!(
        route.contains("INSERT INTO public.events__part (id, ts, Kind, payload) OVERRIDING SYSTEM VALUE VALUES"),
        "{route}"
    );
    assert!(!route.contains("SET id ="), "{route}");
    assert!(!route.contains(" id = CASE"), "{route}");
    assert!(route.contains("can only be updated to DEFAULT"), "{route}");
    let swap = text(moving::sql::swap(&bp));
    assert!(
        swap.contains("ALTER SEQUENCE public.events_id_seq RENAME TO events_id_seq__o"),
        "{swap}"
    );
    assert!(swap.contains("ALTER TABLE public.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME public.events_id_seq INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 NO CYCLE CACHE 1)"), "{swap}");
    assert!(
        swap.contains(
            "setval('public.events_id_seq'::regclass, s.last_value, s.is_called) FROM public.events_id_seq__o s"
        ),
        "{swap}"
    );
    let bp = derive(&plan("public.events", "sync", MONTHLY), &facts(identity_table()))
        .unwrap()
        .blueprint;
    let swap = text(sync::sql::swap(&bp));
    assert!(!swap.contains("= EXCLUDED.id"), "{swap}");
    let unswap = text(sync::sql::unswap(&bp));
    assert!(
        unswap.contains("ALTER TABLE public.events__part ALTER COLUMN id DROP IDENTITY"),
        "{unswap}"
    );
    assert!(
        unswap.contains("ALTER SEQUENCE public.events_id_seq__o RENAME TO events_id_seq"),
        "{unswap}"
    );
}
