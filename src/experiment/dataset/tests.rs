use super::*;
use crate::experiment::ExperimentSpec;
use crate::experiment::outcome::Verdict;

/// A small dataset: three cities, two templates, all ordered pairs, four conditions.
fn spec_json() -> serde_json::Value {
    serde_json::json!({
        "name": "tiny",
        "generation": {"max_tokens": 4},
        "dataset": {
            "needles": [
                {"needle": "SF", "city": "San Francisco"},
                {"needle": "NY", "city": "New York"},
                {"name": "Paris", "needle": "Paris", "city": "Paris"}
            ],
            "expected": [" Places to visit in {city}:"],
            "keywords": ["{city}"],
            "pairs": "all",
            "templates": [
                {"name": "a", "turns": [{"role": "user", "content": "Going to {needle}."}]},
                {"name": "b", "turns": [{"role": "user", "content": "Off to {needle} soon."}]}
            ],
            "conditions": [
                {"op": {"kind": "none"}},
                {"op": {"kind": "zero"}},
                {"op": {"kind": "transplant", "from": "{partner}"}},
                {"op": {"kind": "mean"}}
            ]
        }
    })
}

fn spec() -> ExperimentSpec {
    ExperimentSpec::from_json(&spec_json().to_string()).unwrap()
}

/// The error message of `spec_json()` after `edit`.
fn error_after(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = spec_json();
    edit(&mut v);
    ExperimentSpec::from_json(&v.to_string())
        .unwrap_err()
        .to_string()
}

#[test]
fn placeholders_are_fields_in_braces() {
    assert_eq!(placeholders("in {city}, {a_b1}"), ["city", "a_b1"]);
    assert_eq!(placeholders("{} {a b} {x"), Vec::<&str>::new());
    let row = &spec().dataset.unwrap().needles[0];
    assert_eq!(row.fill("{needle}: {city}"), "SF: San Francisco");
    assert_eq!(row.name(), "SF");
}

#[test]
fn mistakes_are_named() {
    let e = error_after(|v| v["dataset"]["expected"][0] = " in {town}".into());
    assert!(
        e.contains("uses {town}, but needle \"SF\" has no field \"town\""),
        "{e}"
    );
    let e = error_after(|v| v["dataset"]["needles"][2]["name"] = "SF".into());
    assert!(e.contains("two needles are named \"SF\""), "{e}");
    let e = error_after(|v| v["dataset"]["pairs"] = serde_json::json!({"listed": [["SF", "LA"]]}));
    assert!(e.contains("names \"LA\", which is not a needle"), "{e}");
    let e = error_after(|v| v["dataset"]["conditions"][2]["op"]["from"] = "LA".into());
    assert!(e.contains("name a needle, or {partner}"), "{e}");
    let e = error_after(|v| v["dataset"]["templates"][1]["turns"][0]["content"] = "x".into());
    assert!(e.contains("template \"b\" has no {needle}"), "{e}");
    let e = error_after(|v| v["variants"] = serde_json::json!([{"name": "A", "needle": "a"}]));
    assert!(e.contains("leave `variants` and `conditions` out"), "{e}");
}

#[test]
fn items_are_template_major_ordered_pairs() {
    let its = items(spec().dataset.as_ref().unwrap());
    assert_eq!(its.len(), 2 * 6);
    assert_eq!(
        (its[0].needle.as_str(), its[0].partner.as_str()),
        ("SF", "NY")
    );
    assert_eq!(
        (its[5].needle.as_str(), its[5].partner.as_str()),
        ("Paris", "NY")
    );
    assert_eq!(its[6].template, 1);
    assert!(its.iter().enumerate().all(|(i, it)| it.index == i));
}

#[test]
fn waves_pack_items_and_judge_each_cell_against_its_partner() {
    let s = spec();
    // The mean needs every needle: 3 variants. A needle's first item adds its 4 conditions,
    // its second only the transplant from its own partner (none, zero and the mean of the
    // needle run once for both): 3 + 5 + 5 + 5 = 18 sequences hold a template's 6 items.
    let waves = expand(&s, 18).unwrap();
    assert_eq!(
        waves.iter().map(|w| w.items.clone()).collect::<Vec<_>>(),
        [vec![0, 1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10, 11]]
    );
    assert_eq!(
        waves[0].spec.conditions.len(),
        6 * 4,
        "a cell per item and condition"
    );
    assert_eq!(waves[0].spec.n_sequences(), 18);
    let waves = expand(&s, 17).unwrap();
    assert_eq!(
        waves.iter().map(|w| w.items.clone()).collect::<Vec<_>>(),
        [vec![0, 1, 2, 3, 4], vec![5], vec![6, 7, 8, 9, 10], vec![11]]
    );
    assert!(waves.iter().all(|w| w.spec.n_sequences() <= 17));
    let w = &waves[0];
    assert_eq!(w.spec.variants.len(), 3);
    assert_eq!(
        w.spec.variants[0].expected,
        [" Places to visit in San Francisco:"]
    );
    assert_eq!(w.spec.prompt.turns[0].content, "Going to {needle}.");
    let c = &w.spec.conditions[2 * 4 + 2]; // item 2 (NY, SF), transplant
    assert_eq!(c.variant, "NY");
    assert_eq!(c.against, ["SF"]);
    assert_eq!(
        c.op,
        crate::experiment::Op::Transplant { from: "SF".into() }
    );
    assert_eq!(c.label.as_deref(), Some("transplant from partner"));
    w.spec.validate().unwrap();
    assert_eq!(
        waves[2].spec.prompt.turns[0].content,
        "Off to {needle} soon."
    );
    let e = expand(&s, 3 + 3).unwrap_err().to_string();
    assert!(e.contains("one item needs 7 sequences"), "{e}");
}

#[test]
fn the_largest_wave_is_estimated_without_expanding() {
    let largest = |s: &ExperimentSpec, max: usize| {
        let waves = expand(s, max).unwrap();
        let seqs = waves.iter().map(|w| w.spec.n_sequences()).max().unwrap();
        let vars = waves.iter().map(|w| w.spec.variants.len()).max().unwrap();
        (vars, seqs)
    };
    let s = spec();
    let data = s.dataset.as_ref().unwrap();
    // All pairs of 3 with a mean: 3 needles; none, zero and the mean once per needle, the
    // transplant once per item.
    assert_eq!(largest_wave(data, 256), (3, 3 + 3 + 3 + 6 + 3));
    assert_eq!(largest_wave(data, 256), largest(&s, 256));
    assert_eq!(
        largest_wave(data, 10),
        (3, 10),
        "waves fill up to the most sequences"
    );
    let mut v = spec_json();
    v["dataset"]["conditions"].as_array_mut().unwrap().pop();
    v["dataset"]["pairs"] = serde_json::json!({"listed": [["SF", "NY"], ["NY", "Paris"]]});
    let s = ExperimentSpec::from_json(&v.to_string()).unwrap();
    assert_eq!(largest_wave(s.dataset.as_ref().unwrap(), 256), (3, 9));
    assert_eq!(largest(&s, 256), (3, 9));
    // The app's memory estimate of a dataset is its largest wave's.
    let m = crate::experiment::memory::RunMemory::of(&s, Some(10), 1000, 0);
    assert_eq!(m.n_seq, 9);
    assert_eq!(
        m.prompt_copies,
        Some(2 * 10 * 1000),
        "one prompt's bytes and one copy"
    );
    assert!(crate::experiment::memory::guess_prompt_tokens(&s) > 0);
}

#[test]
fn without_a_mean_a_wave_holds_only_the_needles_it_uses() {
    let mut v = spec_json();
    v["dataset"]["conditions"].as_array_mut().unwrap().pop();
    v["dataset"]["pairs"] = serde_json::json!({"listed": [["SF", "NY"], ["NY", "Paris"]]});
    let s = ExperimentSpec::from_json(&v.to_string()).unwrap();
    let waves = expand(&s, 2 + 3).unwrap();
    assert_eq!(waves.len(), 4);
    let names: Vec<&str> = waves[1]
        .spec
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["NY", "Paris"]);
}

/// A condition result with a preference against `partner` (its verdict derived from it).
fn cell(
    template: &crate::experiment::results::ConditionResult,
    label: &str,
    own: &str,
    partner: &str,
    pref: f64,
) -> crate::experiment::results::ConditionResult {
    let mut c = template.clone();
    c.label = label.into();
    c.variant = own.into();
    c.preference = Some(pref);
    c.verdict = Some(Verdict::new(own, pref, partner));
    c
}

/// Results of the dataset restricted to template a, items 0..4 in one wave, with
/// hand-picked preferences: none, zero, transplant, mean per item.
fn hand_results() -> DatasetResults {
    let s = spec();
    let data = s.dataset.clone().unwrap();
    let text = include_str!("../../../tests/data/results-v0.json");
    let session = crate::session::Session::from_json(text, "results-v0.json").unwrap();
    let mut grid = session.results.unwrap();
    let template = grid.conditions[0].clone();
    let its = items(&data);
    let prefs = [
        [2.0, 1.0, -1.0, 0.5],
        [3.0, -1.0, -2.0, 3.0],
        [1.0, 0.5, 0.02, 1.0],
        [4.0, 2.0, -3.0, 2.0],
    ];
    let labels: Vec<String> = data.conditions.iter().map(|c| c.row_label()).collect();
    grid.conditions = (0..4)
        .flat_map(|i| {
            let it = &its[i];
            (0..4)
                .map(|ci| {
                    cell(
                        &template,
                        &labels[ci],
                        &it.needle,
                        &it.partner,
                        prefs[i][ci],
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    DatasetResults {
        spec: s,
        items: its,
        max_sequences: 256,
        waves: vec![DatasetWave {
            template: 0,
            items: vec![0, 1, 2, 3],
            results: grid,
        }],
        complete: false,
        seconds: 1.0,
    }
}

#[test]
fn rows_map_cells_back_to_items_with_their_change_against_none() {
    let r = hand_results();
    let rows = r.rows();
    assert_eq!(rows.len(), 16);
    let row = &rows[4 + 2];
    assert_eq!(
        (row.item, row.needle.as_str(), row.partner.as_str()),
        (1, "SF", "Paris")
    );
    assert_eq!(row.label, "transplant from partner");
    assert_eq!(row.delta, Some(-5.0));
    assert!(row.flips());
    assert_eq!(rows[0].delta, Some(0.0));
}

#[test]
fn an_items_cells_count_only_its_own_needles_keywords() {
    use crate::experiment::outcome::KeywordCount;
    let mut r = hand_results();
    let count = |variant: &str| KeywordCount {
        variant: variant.into(),
        count: 1,
    };
    // Item 1 is SF judged against Paris; its wave also holds NY.
    r.waves[0].results.conditions[4].keywords = vec![count("SF"), count("NY"), count("Paris")];
    let cells = r.item_cells(1).unwrap();
    let kept: Vec<&str> = cells[0]
        .keywords
        .iter()
        .map(|k| k.variant.as_str())
        .collect();
    assert_eq!(kept, ["SF", "Paris"]);
    assert_eq!(cells.len(), 4);
    assert_eq!(cells[0].label, r.item_conditions(1).unwrap()[0].label);
    assert!(r.item_cells(99).is_none());
}

#[test]
fn aggregates_count_flips_and_average_changes() {
    let r = hand_results();
    let a = aggregates(&r);
    assert_eq!(a.items, (4, 12));
    let zero = &a.overall[1];
    // zero: prefs 1, -1, 0.5, 2 → one flip of 4; Δ = -1, -4, -0.5, -2 → mean -1.875.
    assert_eq!((zero.n, zero.flips), (1 + 3, 1));
    assert_eq!(zero.flip_rate, Some(0.25));
    assert_eq!(zero.mean_delta, Some(-1.875));
    let ci = zero.delta_ci.unwrap();
    assert!(ci.low >= -4.0 && ci.high <= -0.5 && ci.low < -1.875 && -1.875 < ci.high);
    // transplant: -1, -2, 0.02 (undecided, not a flip), -3 → 3 flips of 4.
    let t = &a.overall[2];
    assert_eq!((t.n, t.flips), (4, 3));
    let w = crate::experiment::stats::wilson(3, 4, crate::experiment::stats::Z95).unwrap();
    assert_eq!(t.flip_ci, Some(w));
    // Needle NY owns items 2 and 3 (NY→SF, NY→Paris): its zero flips none.
    let (name, ny) = &a.by_needle[1];
    assert_eq!((name.as_str(), ny[1].n, ny[1].flips), ("NY", 2, 0));
    // Template b has no finished item.
    assert_eq!(a.by_template[1].1[0].n, 0);
    assert_eq!(a.by_template[1].1[0].flip_rate, None);
}

#[test]
fn tables_show_partial_runs_and_csv_has_a_row_per_item_and_condition() {
    let r = hand_results();
    let t = to_table(&r);
    assert!(
        t.contains("tiny — 4 of 12 items, STOPPED EARLY (partial)"),
        "{t}"
    );
    assert!(t.contains("0.25 [0.05, 0.70]"), "{t}");
    assert!(t.contains("-1.88 ["), "{t}");
    let md = to_markdown(&r);
    assert!(md.contains("| zero | 4 | 1 | 0.25 [0.05, 0.70] |"), "{md}");
    let csv = to_csv(&r);
    assert_eq!(csv.lines().count(), 1 + 16);
    assert!(
        csv.lines()
            .nth(7)
            .unwrap()
            .starts_with("1,a,SF,Paris,transplant from partner,-2,flips,-5"),
        "{csv}"
    );
}

#[test]
fn dataset_results_round_trip_and_validate() {
    let r = hand_results();
    let json = serde_json::to_string(&r).unwrap();
    let back: DatasetResults = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let mut bad = r.clone();
    bad.items.pop();
    assert!(bad.validate().unwrap_err().contains("do not match"));
    // (The hand-made wave's grid spec is the v0 fixture's, so its grid does not validate.)
    assert!(r.validate().unwrap_err().starts_with("dataset.waves[0]."));
}

/// `{random}` resamples: per item, a needle that is neither the item's nor its partner, the
/// same on every expansion, and not always the same one.
#[test]
fn a_random_donor_is_another_needle_fixed_per_item() {
    let mut v = spec_json();
    v["dataset"]["needles"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"needle": "LA", "city": "Los Angeles"}));
    v["dataset"]["conditions"] = serde_json::json!([
        {"op": {"kind": "none"}},
        {"op": {"kind": "transplant", "from": "{random}"}}
    ]);
    let s = ExperimentSpec::from_json(&v.to_string()).unwrap();
    s.validate().unwrap();
    let data = s.dataset.as_ref().unwrap();
    let mut donors = std::collections::BTreeSet::new();
    for item in items(data) {
        let d = expand::random_donor(data, &item);
        assert!(d != item.needle && d != item.partner, "{item:?} → {d}");
        assert_eq!(d, expand::random_donor(data, &item), "fixed per item");
        donors.insert(d);
    }
    assert!(donors.len() > 1, "the draw varies over items: {donors:?}");
    let waves = expand(&s, 256).unwrap();
    let labels: Vec<String> = waves[0]
        .spec
        .conditions
        .iter()
        .map(|c| c.row_label())
        .collect();
    assert!(
        labels
            .iter()
            .any(|l| l == "transplant from a random needle"),
        "{labels:?}"
    );
    // With two needles there is no third to draw.
    let mut two = spec_json();
    two["dataset"]["needles"]
        .as_array_mut()
        .unwrap()
        .truncate(2);
    two["dataset"]["conditions"] =
        serde_json::json!([{"op": {"kind": "transplant", "from": "{random}"}}]);
    let e = ExperimentSpec::from_json(&two.to_string())
        .and_then(|s| s.validate())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 3 needles"), "{e}");
}
