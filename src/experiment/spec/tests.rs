//! Unit tests of the spec: parsing, validation messages, the seed grid, row labels.

use super::*;

fn two_variant_spec() -> ExperimentSpec {
    ExperimentSpec {
        variants: vec![
            Variant {
                name: "SF".into(),
                needle: "SF".into(),
                expected: vec![],
                keywords: vec![],
            },
            Variant {
                name: "NY".into(),
                needle: "NY".into(),
                expected: vec![],
                keywords: vec![],
            },
        ],
        ..Default::default()
    }
}

#[test]
fn layer_sets_parse_and_print() {
    assert_eq!(LayerSet::parse("all").unwrap(), LayerSet::All);
    let s = LayerSet::parse("0-3, 7,9-10").unwrap();
    assert_eq!(s.resolve(30), vec![0, 1, 2, 3, 7, 9, 10]);
    assert_eq!(s.to_string(), "0-3,7,9-10");
    assert_eq!(s.max(), Some(10));
    assert!(LayerSet::parse("3-1").is_err());
    assert!(LayerSet::parse("x").is_err());
    assert!(LayerSet::parse("0-29").unwrap().covers_all(30));
    let json: LayerSet = serde_json::from_str("[2, 1]").unwrap();
    assert_eq!(json.to_string(), "1-2");
}

#[test]
fn plain_prompt_has_role_labels_and_blank_lines() {
    let mut spec = two_variant_spec();
    spec.prompt.turns = vec![
        Turn {
            role: "user".into(),
            content: "To {needle}.".into(),
        },
        Turn {
            role: "assistant".into(),
            content: "Ok.".into(),
        },
    ];
    assert_eq!(
        spec.plain_prompt(&spec.variants[1]),
        "User: To NY.\n\nAssistant: Ok.\n\nAssistant:"
    );
}

#[test]
fn validation_names_the_problem() {
    let mut spec = two_variant_spec();
    spec.prompt.turns[0].content = "no placeholder".into();
    assert_eq!(spec.validate(), Err(SpecError::NoPlaceholder));

    let mut spec = two_variant_spec();
    spec.conditions.push(
        Condition::new("SF", Op::Remove)
            .at(Site::layers(LayerSet::parse("0-3").unwrap(), KvPart::Both)),
    );
    let msg = spec.validate().unwrap_err().to_string();
    assert!(msg.contains("all layers"), "{msg}");

    let mut spec = two_variant_spec();
    spec.conditions
        .push(Condition::new("SF", Op::Transplant { from: "LA".into() }));
    assert!(spec.validate().unwrap_err().to_string().contains("\"LA\""));
}

#[test]
fn hostile_specs_are_refused_with_the_cause() {
    let seed = SEED_JSON;
    let err = |text: &str| ExperimentSpec::from_json(text).unwrap_err().to_string();
    let typo = seed.replacen("\"max_tokens\"", "\"max_token\"", 1);
    let e = err(&typo);
    assert!(e.contains("unknown field `max_token`"), "{e}");
    let e = err(&seed.replacen("\"probes\": [", "\"probes\": [\"\", ", 1));
    assert!(e.contains("probe 0 is empty"), "{e}");
    let e = err(&seed.replacen("\"max_tokens\": 100", "\"max_tokens\": 1000000000", 1));
    assert!(e.contains("max_tokens is 1000000000"), "{e}");
    let e = err(&seed.replacen(
        "\"max_tokens\": 100",
        "\"max_tokens\": 18446744073709551615",
        1,
    ));
    assert!(e.contains("max_tokens"), "{e}");
    let e = err(&seed.replacen("\"top_k\": 10", "\"top_k\": 4000000000", 1));
    assert!(e.contains("top_k is 4000000000"), "{e}");
    // A byte order mark is skipped.
    assert!(ExperimentSpec::from_json(&format!("\u{feff}{seed}")).is_ok());
    let spec = ExperimentSpec::seed();
    let e = spec
        .check_fits(64, 23_040, 0, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trained context of 64 tokens"), "{e}");
    let e = spec
        .check_fits(8192, 23_040, 0, Some(1 << 20))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MiB of memory"), "{e}");
    assert!(spec.check_fits(8192, 23_040, 0, Some(1 << 40)).is_ok());
    // The weights count too: a small cache beside weights that fill the memory does not fit.
    let e = spec
        .check_fits(8192, 23_040, 1 << 40, Some(1 << 40))
        .unwrap_err()
        .to_string();
    assert!(e.contains("weights 1048576 MiB"), "{e}");
}

#[test]
fn json_errors_are_explained() {
    let err = ExperimentSpec::from_json("{\"variants\": 3}").unwrap_err();
    assert!(matches!(err, SpecError::Json(_)));
    assert!(err.to_string().contains("not valid"));
}

#[test]
fn seed_grid_covers_every_variant_and_intervention() {
    let spec = two_variant_spec();
    let grid = spec.seed_grid();
    assert_eq!(grid.len(), 8);
    assert!(
        grid.iter()
            .any(|c| c.variant == "SF" && c.op == Op::Transplant { from: "NY".into() })
    );
    let mut with_grid = spec.clone();
    with_grid.conditions = grid;
    assert!(with_grid.validate().is_ok());
}

#[test]
fn row_labels_describe_scope() {
    let c =
        Condition::new("SF", Op::Zero).at(Site::layers(LayerSet::parse("0-4").unwrap(), KvPart::K));
    assert_eq!(c.row_label(), "zero [layers 0-4] [K]");
}

#[test]
fn ops_refuse_fields_they_do_not_take() {
    let op = |text: &str| serde_json::from_str::<Op>(text).map_err(|e| e.to_string());
    assert_eq!(op(r#"{"kind": "zero"}"#), Ok(Op::Zero));
    let e = op(r#"{"kind": "zero", "from": "NY"}"#).unwrap_err();
    assert!(e.contains("zero takes no `from`"), "{e}");
    let e = op(r#"{"kind": "remove", "form": "NY"}"#).unwrap_err();
    assert!(e.contains("unknown field `form`"), "{e}");
    let e = op(r#"{"kind": "transplant"}"#).unwrap_err();
    assert!(e.contains("transplant needs `from`"), "{e}");
    let e = op(r#"{"kind": "shuffle"}"#).unwrap_err();
    assert!(e.contains("unknown intervention `shuffle`"), "{e}");
    for o in [
        Op::None,
        Op::Zero,
        Op::Remove,
        Op::Transplant { from: "NY".into() },
    ] {
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), o, "{text}");
        assert_eq!(Op::from_short(&o.short()), Some(o));
    }
}

#[test]
fn default_sites_are_left_out_of_files() {
    let c = Condition::new("SF", Op::Zero);
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"variant":"SF","op":{"kind":"zero"}}"#
    );
    let c = c.at(Site::layers(LayerSet::parse("2").unwrap(), KvPart::V));
    let text = serde_json::to_string(&c).unwrap();
    assert_eq!(
        text,
        r#"{"variant":"SF","op":{"kind":"zero"},"site":{"layers":"2","part":"v"}}"#
    );
    assert_eq!(serde_json::from_str::<Condition>(&text).unwrap(), c);
}

#[test]
fn the_shipped_experiments_are_in_the_current_shape() {
    for text in [
        SEED_JSON,
        include_str!("../../../assets/experiments/seed-chat.json"),
        include_str!("../../../assets/experiments/seed-long.json"),
    ] {
        assert!(!text.contains("\"intervention\""));
        assert!(ExperimentSpec::from_json(text).is_ok());
    }
}

#[test]
fn conditions_that_start_from_the_same_cache_run_as_one() {
    let zero = Condition::new("SF", Op::Zero);
    let against_ny = Condition {
        against: vec!["NY".into()],
        label: Some("zero it".into()),
        ..zero.clone()
    };
    assert!(
        zero.runs_as(&against_ny),
        "label and against only change how it is read"
    );
    let v_only = zero.clone().at(Site {
        part: KvPart::V,
        ..Site::default()
    });
    assert!(!zero.runs_as(&v_only), "another site is another cache");
    assert!(
        !zero.runs_as(&Condition::new("NY", Op::Zero)),
        "another variant"
    );
    assert!(
        !zero.runs_as(&Condition::new("SF", Op::Remove)),
        "another op"
    );
    let none = Condition::new("SF", Op::None);
    assert!(
        none.runs_as(&none.clone().at(v_only.site.clone())),
        "none at any site"
    );
    let from = |d: &str| Condition::new("SF", Op::Transplant { from: d.into() });
    assert!(!from("NY").runs_as(&from("LA")), "another donor");

    let all = [
        zero.clone(),
        from("NY"),
        against_ny,
        v_only,
        from("NY"),
        none,
    ];
    assert_eq!(shared_runs(&all), [0, 1, 0, 3, 1, 5]);
    assert_eq!(distinct_runs(&all), 4);
    let mut s = two_variant_spec();
    s.conditions = all.to_vec();
    assert_eq!(s.n_sequences(), 2 + 4);
}
