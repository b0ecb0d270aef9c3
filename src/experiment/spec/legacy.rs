//! Conditions as kvlab wrote them before ops and sites were separate (session format 1 and
//! every experiment file of that time): `{"intervention": {...}, "layers", "part", "span"}`
//! beside the variant. Experiment files carry no version, so they are recognised by that shape
//! and upgraded on reading; session files upgrade through their own version ladder, which calls
//! the same functions.

use serde_json::{Map, Value};

/// Upgrades every condition of an experiment document written in the old shape, in place.
/// Conditions already in the current shape are left alone.
pub fn upgrade_conditions(spec: &mut Value) {
    for c in spec
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        upgrade_condition(c);
    }
}

/// Upgrades one condition (or sweep) object: `intervention` becomes `op`; `layers`, `part` and
/// `span` move into `site`. Anything else is kept, so unknown fields still get refused.
pub fn upgrade_condition(c: &mut Value) {
    let Some(o) = c.as_object_mut() else { return };
    if o.contains_key("op") || !o.contains_key("intervention") {
        return;
    }
    if let Some(op) = o.remove("intervention") {
        o.insert("op".into(), op);
    }
    let mut site = Map::new();
    for key in ["span", "layers", "part"] {
        if let Some(v) = o.remove(key)
            && !v.is_null()
        {
            site.insert(key.into(), v);
        }
    }
    if !site.is_empty() {
        o.insert("site".into(), Value::Object(site));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::spec::{Condition, KvPart, LayerSet, Op, Site};

    #[test]
    fn old_conditions_read_as_ops_at_sites() {
        let mut v = serde_json::json!({"conditions": [
            {"variant": "SF", "intervention": {"kind": "zero"}, "layers": "0-3", "part": "k"},
            {"variant": "NY", "intervention": {"kind": "transplant", "from": "SF"}},
            {"variant": "NY", "op": {"kind": "remove"}},
        ]});
        upgrade_conditions(&mut v);
        let cs: Vec<Condition> = serde_json::from_value(v["conditions"].clone()).unwrap();
        assert_eq!(
            cs[0],
            Condition::new("SF", Op::Zero)
                .at(Site::layers(LayerSet::parse("0-3").unwrap(), KvPart::K))
        );
        assert_eq!(
            cs[1],
            Condition::new("NY", Op::Transplant { from: "SF".into() })
        );
        assert_eq!(cs[2], Condition::new("NY", Op::Remove));
    }

    #[test]
    fn unknown_fields_survive_the_upgrade_and_are_refused() {
        let mut v =
            serde_json::json!({"variant": "SF", "intervention": {"kind": "zero"}, "layer": "3"});
        upgrade_condition(&mut v);
        let e = serde_json::from_value::<Condition>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `layer`"), "{e}");
    }
}
