//! Older session files brought up to the current format, one version at a time, on the JSON
//! document before it is typed (so each step sees exactly what that version wrote):
//! - 0 → 1: bare results files of `kvlab run --out` become sessions; steps gain their top-1/top-2
//!   `gap`; results gain `complete` and `warnings`.
//! - 1 → 2: conditions become an op at a site (see `experiment::spec::legacy`); results keep the
//!   typed op and site instead of their names in words, and a typed verdict instead of its text;
//!   sweeps name their op. Sweeps of that time did not record the experiment they were measured
//!   on, so they read as not current.
//! - 2 → 3: sessions may hold a dataset run (`dataset`) and specs a `dataset`; nothing older
//!   changes shape. The version says so, so that an older kvlab refuses the file with "update
//!   kvlab" rather than calling the unknown field damage.

use serde_json::{Value, json};

use super::{FORMAT, VERSION};
use crate::experiment::spec::{Op, upgrade_condition, upgrade_conditions};

/// Whether a JSON document is a bare results file (`kvlab run --out`, session version 0).
pub(super) fn is_bare_results(value: &Value) -> bool {
    ["kvlab_version", "spec", "model", "model_info", "conditions"]
        .iter()
        .all(|k| value.get(k).is_some())
}

/// Turns a bare results file into a version-0 session document: the experiment and the model
/// reference come from the results themselves (the model's path was not recorded then).
pub(super) fn wrap_bare_results(results: Value) -> Value {
    json!({
        "format": FORMAT,
        "version": 0,
        "spec": results["spec"].clone(),
        "model": {
            "path": results["model"]["file_name"].clone(),
            "fingerprint": results["model"].clone(),
            "info": results["model_info"].clone(),
        },
        "app_version": results["kvlab_version"].clone(),
        "llama_cpp_2_version": results["llama_cpp_2_version"].clone(),
        "results": results,
    })
}

/// Adds the top-1/top-2 `gap` to every step of a generation that lacks it.
fn fill_gaps(generation: &mut Value) {
    for step in generation["steps"].as_array_mut().into_iter().flatten() {
        if step.get("gap").is_none() {
            let lp = |i: usize| step["top"][i]["logprob"].as_f64();
            let gap = match (lp(0), lp(1)) {
                (Some(a), Some(b)) => a - b,
                _ => f64::INFINITY,
            };
            step["gap"] = crate::experiment::floats::to_json(gap);
        }
    }
}

/// Brings an older session document up to [`VERSION`], in place, one version at a time.
/// Errors name the value that could not be read.
pub(super) fn migrate(value: &mut Value, from: u32) -> Result<(), String> {
    for version in from..VERSION {
        match version {
            0 => results_0_to_1(value),
            1 => {
                upgrade_conditions(&mut value["spec"]);
                if let Some(r) = value.get_mut("results").filter(|r| r.is_object()) {
                    results_1_to_2(r)?;
                }
                if let Some(sweep) = value.get_mut("sweep").filter(|s| s.is_object()) {
                    upgrade_condition(&mut sweep["sweep"]);
                    sweep["spec"] = Value::Null;
                }
            }
            _ => {}
        }
    }
    value["version"] = VERSION.into();
    Ok(())
}

/// Results of version 0 had no top-1/top-2 `gap` per step (it is derived from the step's top
/// list), no `complete` and no `warnings`.
fn results_0_to_1(value: &mut Value) {
    let Some(r) = value.get_mut("results") else {
        return;
    };
    if let Some(o) = r.as_object_mut() {
        o.entry("complete").or_insert(true.into());
        o.entry("warnings").or_insert(json!([]));
    }
    for (list, field) in [("variants", "baseline"), ("conditions", "generation")] {
        for item in r[list].as_array_mut().into_iter().flatten() {
            fill_gaps(&mut item[field]);
        }
    }
}

/// Version 1 results named each condition's intervention, layers and part in words and its
/// verdict in a sentence; version 2 keeps them typed. The site comes from the results' own
/// spec where it lists the same condition (it knows whether the span was the needle's).
fn results_1_to_2(r: &mut Value) -> Result<(), String> {
    upgrade_conditions(&mut r["spec"]);
    let spec_conditions = r["spec"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let needle = r["needle_span"].clone();
    for (i, c) in r["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(o) = c.as_object_mut() else { continue };
        if o.contains_key("op") {
            continue;
        }
        let at = |field: &str| format!("results.conditions[{i}].{field}");
        let words = o.remove("intervention").unwrap_or(Value::Null);
        let op = words.as_str().and_then(Op::from_short).ok_or_else(|| {
            format!(
                "{}: cannot read {words} as an intervention",
                at("intervention")
            )
        })?;
        o.insert(
            "op".into(),
            serde_json::to_value(&op).map_err(|e| e.to_string())?,
        );
        let layers = o.remove("layers");
        let part = o.remove("part");
        let from_spec = spec_conditions
            .get(i)
            .filter(|sc| sc.get("variant") == o.get("variant") && sc.get("op") == o.get("op"));
        let site = match from_spec {
            Some(sc) => sc.get("site").cloned().unwrap_or(json!({})),
            None => {
                let mut site = serde_json::Map::new();
                for (key, v) in [("layers", layers), ("part", part)] {
                    if let Some(v) = v.filter(|v| !v.is_null()) {
                        site.insert(key.into(), v);
                    }
                }
                if o.get("span").is_some_and(|s| *s != needle) {
                    site.insert("span".into(), o["span"].clone());
                }
                Value::Object(site)
            }
        };
        o.insert("site".into(), site);
        let verdict = o.remove("verdict").unwrap_or(Value::Null);
        if let Some(text) = verdict.as_str() {
            let typed = verdict_1_to_2(text, o.get("preference"))
                .ok_or_else(|| format!("{}: cannot read {verdict}", at("verdict")))?;
            o.insert("verdict".into(), typed);
        }
    }
    Ok(())
}

/// "keeps SF, +2.10" / "flips to NY, −8.50" / "undecided, +0.01" as a typed verdict; the
/// preference comes from the result's own number when it has one (the text is rounded).
fn verdict_1_to_2(text: &str, preference: Option<&Value>) -> Option<Value> {
    let (head, number) = text.rsplit_once(", ")?;
    let pref = match preference.filter(|p| !p.is_null()) {
        Some(p) => p.clone(),
        None => {
            let n: f64 = number.replace('−', "-").parse().ok()?;
            crate::experiment::floats::to_json(n)
        }
    };
    Some(if let Some(v) = head.strip_prefix("keeps ") {
        json!({"kind": "keeps", "variant": v, "preference": pref})
    } else if let Some(v) = head.strip_prefix("flips to ") {
        json!({"kind": "flips_to", "variant": v, "preference": pref})
    } else if head == "undecided" {
        json!({"kind": "undecided", "preference": pref})
    } else {
        return None;
    })
}
