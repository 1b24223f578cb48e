//! The statements `plan` prints, pinned: any change to the SQL of a step
//! shows as a reviewed change of these snapshots. Blueprints come from
//! hand-written facts (no database): an event log whose schema, name and
//! columns need quoting, partitioned by range, list and hash.

use crate::blueprint::derive::{derive, fixtures::*};

fn rendered(method: &str, partition: &str, list_values: &[i64]) -> String {
    let p = plan("'\"odd schema\".\"Event Log\"'", method, partition);
    let mut f = facts(table("odd schema", "Event Log"));
    if !list_values.is_empty() {
        f.min = None;
        f.max = None;
        f.list_values = list_values.to_vec();
    }
    super::steps_text(&derive(&p, &f).unwrap().blueprint)
}

#[test]
fn range_move() {
    insta::assert_snapshot!(rendered("move", MONTHLY, &[]));
}

#[test]
fn range_sync() {
    insta::assert_snapshot!(rendered("sync", MONTHLY, &[]));
}

#[test]
fn range_attach() {
    insta::assert_snapshot!(rendered("attach", MONTHLY, &[]));
}

#[test]
fn list_sync() {
    insta::assert_snapshot!(rendered("sync", "  by: list\n  column: Kind\n  premake: 1\n", &[3, 7]));
}

#[test]
fn hash_move() {
    insta::assert_snapshot!(rendered("move", "  by: hash\n  column: id\n  modulus: 3\n", &[]));
}

#[test]
fn list_text_attach() {
    let p = plan(
        "'\"odd schema\".\"Event Log\"'",
        "attach",
        "  by: list\n  column: Region\n  initial: \"eu'west\"\n  default_partition: true\n",
    );
    let mut info = table("odd schema", "Event Log");
    info.columns.push(column("Region", "\"odd schema\".\"Region\""));
    info.columns.last_mut().unwrap().category = "E".into();
    let mut f = facts(info);
    f.min = None;
    f.max = None;
    f.list_initial = Some(Ok("eu'west".into()));
    insta::assert_snapshot!(super::steps_text(&derive(&p, &f).unwrap().blueprint));
}
