//! Comparing two runs' results (for `kvlab verify`): every field but the timings and the thread
//! count, exactly.

use serde_json::Value;

use super::RunResults;

/// Where two results differ, as `path: saved → fresh` lines; empty when they are identical
/// (timings excluded).
pub fn differences(saved: &RunResults, fresh: &RunResults) -> Vec<String> {
    let strip = |r: &RunResults| {
        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("timings");
            // Threads are how the run was done, not what it produced.
            if let Some(settings) = o.get_mut("settings").and_then(|s| s.as_object_mut()) {
                settings.remove("threads");
            }
        }
        v
    };
    let mut out = Vec::new();
    diff(&strip(saved), &strip(fresh), "", &mut out);
    out
}

/// Where two values differ (any serializable part of results, e.g. a dataset item's cells),
/// as [`differences`] says it.
pub fn value_differences<T: serde::Serialize + ?Sized>(saved: &T, fresh: &T) -> Vec<String> {
    let value = |x: &T| serde_json::to_value(x).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff(&value(saved), &value(fresh), "", &mut out);
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        s.chars().take(59).collect::<String>() + "…"
    } else {
        s
    }
}

fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(vb) => diff(va, vb, &p, out),
                    None => out.push(format!("{p}: missing in the re-run")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: only in the re-run"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{path}: {} items saved, {} re-run",
                    x.len(),
                    y.len()
                ));
            }
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {} → {}", short(a), short(b))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_paths_of_differences() {
        let a: Value = serde_json::json!({"x": [1, 2, {"y": "a"}], "z": 1});
        let b: Value = serde_json::json!({"x": [1, 3, {"y": "b"}], "w": 2});
        let mut out = Vec::new();
        diff(&a, &b, "", &mut out);
        assert_eq!(
            out,
            vec![
                ".x[1]: 2 → 3",
                ".x[2].y: \"a\" → \"b\"",
                ".z: missing in the re-run",
                ".w: only in the re-run"
            ]
        );
    }
}
