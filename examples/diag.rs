use std::collections::BTreeMap;
use std::sync::Arc;
use tailhook::rules::{load_rules, rule_files, Matcher, Verdict};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let files = rule_files(&[std::path::PathBuf::from("rules")]).unwrap();
    let rules: Vec<_> = load_rules(&files)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let m = Matcher::new(rules);
    let text = std::fs::read_to_string(path).unwrap();
    let mut stats: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut lines = 0;
    let mut cand_lines = 0;
    for line in text.lines() {
        lines += 1;
        let mut any = false;
        for (rule, v) in m.verdicts(line) {
            any = true;
            let e = stats.entry(rule.id.clone()).or_default();
            e.0 += 1;
            if matches!(v, Verdict::Match(_)) {
                e.1 += 1;
            }
        }
        cand_lines += any as u64;
    }
    println!("lines {lines}, lines with a candidate {cand_lines}");
    let mut v: Vec<_> = stats.into_iter().collect();
    v.sort_by_key(|(_, (c, _))| std::cmp::Reverse(*c));
    for (id, (c, mt)) in v {
        println!("{c:>9} {mt:>9} {id}");
    }
}
