//! Every example plan in plans/ parses and passes the checks that need no
//! database.

#[test]
fn example_plans_are_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/plans")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            repartition::plan_file::PlanFile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "expected the example plans, found {n}");
}

/// The parser under random damage: lines dropped, doubled, cut or indented
/// wrongly, values swapped for hostile ones, bytes inserted. It never
/// panics, and every rejection is one line of text.
#[test]
fn damaged_plans_never_panic_and_every_rejection_is_a_sentence() {
    use repartition::plan_file::PlanFile;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut plans = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/plans")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            plans.push(std::fs::read_to_string(path).unwrap());
        }
    }
    let hostile = [
        "",
        "~",
        "-1",
        "0",
        "99999999999999999999999",
        "1e309",
        "NaN",
        "[]",
        "{}",
        "[a, [b, [c]]]",
        "\"\\u0000\"",
        "'; DROP TABLE x; --'",
        "\"a\\\"b\"",
        "ünïcödé",
        "0x1F",
        "!!binary aGk=",
        "&anchor x",
        "*nowhere",
        "2s",
        "-5ms",
        "month",
        "fortnight",
        "Europe/Nowhere",
        "public.\"we.ird\"",
        "a.b.c.d",
        "yes",
        "|\n  block",
        ">-",
        "\t",
        "%TAG ! tag:x,2000:",
    ];
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let base = &plans[rng.usize(0..plans.len())];
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for _ in 0..rng.usize(1..4) {
            if lines.is_empty() {
                break;
            }
            let i = rng.usize(0..lines.len());
            match rng.u8(0..7) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                2 => {
                    let l = &mut lines[i];
                    if let Some((k, _)) = l.split_once(':') {
                        *l = format!("{k}: {}", hostile[rng.usize(0..hostile.len())]);
                    }
                }
                3 => {
                    let l = &mut lines[i];
                    let cut = rng.usize(0..=l.len());
                    if l.is_char_boundary(cut) {
                        l.truncate(cut);
                    }
                }
                4 => lines[i] = format!("{}{}", " ".repeat(rng.usize(0..5)), lines[i].trim_start()),
                5 => {
                    let b = rng.u8(..);
                    lines[i].push(char::from(b));
                }
                _ => lines.insert(
                    i,
                    format!(
                        "{}: {}",
                        hostile[rng.usize(0..hostile.len())],
                        hostile[rng.usize(0..hostile.len())]
                    ),
                ),
            }
        }
        let text = lines.join("\n");
        let outcome = std::panic::catch_unwind(|| PlanFile::parse("fuzz.yaml", &text).map(|_| ()));
        match outcome {
            Err(_) => panic!("case {case} (FUZZ_SEED={seed}) panicked on:\n{text}"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    !msg.trim().is_empty() && !msg.contains('\n') && !msg.contains("panicked"),
                    "case {case} (FUZZ_SEED={seed}): the rejection is not one sentence: {msg:?}\n{text}"
                );
            }
        }
    }
    // Hostile YAML: aliases that expand without end, deep nesting.
    let bomb = format!(
        "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d]\n{}",
        plans[0]
    );
    assert!(PlanFile::parse("bomb.yaml", &bomb).is_err());
    let deep = format!("table: {}x{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(PlanFile::parse("deep.yaml", &deep).is_err());
    println!(
        "{cases} damaged plans (FUZZ_SEED={seed}): {accepted} still valid, {refused} refused, each with one sentence"
    );
    assert!(refused > cases / 2);
}
