//! Floats in saved files that may be NaN or ±∞ (the log-prob of a token that cannot occur, the
//! gap of a step with one alternative). JSON has no such numbers and serde_json writes them as
//! `null`, which then cannot be read back as a float: a session written must always open. With
//! `#[serde(with = "crate::experiment::floats")]` a field writes finite values as numbers and the
//! others as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, and reads all of these, plus
//! `null` (what older files hold) as NaN.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};

/// A value (or a container of values) written and read with non-finite floats allowed.
pub trait Float: Sized {
    /// Writes the value.
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// Reads the value.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// For `#[serde(serialize_with)]`.
pub fn serialize<T: Float, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    v.write(s)
}

/// For `#[serde(deserialize_with)]`.
pub fn deserialize<'de, T: Float, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::read(d)
}

/// The text written for a non-finite value.
pub fn non_finite_text(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("NaN")
    } else if x == f64::INFINITY {
        Some("Infinity")
    } else if x == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// A float as a JSON value (for documents built by hand, e.g. migrations).
pub fn to_json(x: f64) -> serde_json::Value {
    match non_finite_text(x) {
        Some(t) => t.into(),
        None => x.into(),
    }
}

struct F64Visitor;

impl Visitor<'_> for F64Visitor {
    type Value = f64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "NaN" | "nan" => Ok(f64::NAN),
            "Infinity" | "+Infinity" | "inf" | "+inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
}

impl Float for f64 {
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match non_finite_text(*self) {
            Some(t) => s.serialize_str(t),
            None => s.serialize_f64(*self),
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F64Visitor)
    }
}

impl Float for f32 {
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match non_finite_text(*self as f64) {
            Some(t) => s.serialize_str(t),
            None => s.serialize_f32(*self),
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F64Visitor).map(|x| x as f32)
    }
}

/// One element of a container, written and read through [`Float`].
struct Elem<T>(T);

impl<T: Float> serde::Serialize for Elem<&T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.write(s)
    }
}

impl<'de, T: Float> serde::Deserialize<'de> for Elem<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::read(d).map(Elem)
    }
}

impl<T: Float> Float for Vec<T> {
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for x in self {
            seq.serialize_element(&Elem(x))?;
        }
        seq.end()
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<Elem<T>> = serde::Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|e| e.0).collect())
    }
}

/// `Option<f64>`: `null` stays `None` (as before); `"NaN"` is `Some(NaN)`.
impl Float for Option<f64> {
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(x) => x.write(s),
            None => s.serialize_none(),
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Option<Elem<f64>> = serde::Deserialize::deserialize(d)?;
        Ok(v.map(|e| e.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        a: f32,
        #[serde(with = "super")]
        b: Vec<f64>,
        #[serde(with = "super")]
        c: Vec<Vec<f32>>,
        #[serde(default, with = "super")]
        d: Option<f64>,
    }

    #[test]
    fn non_finite_values_round_trip_and_old_nulls_read_as_nan() {
        let t = T {
            a: f32::NAN,
            b: vec![1.5, f64::INFINITY, f64::NEG_INFINITY],
            c: vec![vec![f32::NEG_INFINITY, -0.25]],
            d: Some(f64::NAN),
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(
            text,
            r#"{"a":"NaN","b":[1.5,"Infinity","-Infinity"],"c":[["-Infinity",-0.25]],"d":"NaN"}"#
        );
        let back: T = serde_json::from_str(&text).unwrap();
        assert!(back.a.is_nan() && back.d.unwrap().is_nan());
        assert_eq!(back.b[1..], [f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(back.c, vec![vec![f32::NEG_INFINITY, -0.25]]);
        let old: T = serde_json::from_str(r#"{"a":null,"b":[null,2],"c":[],"d":null}"#).unwrap();
        assert!(old.a.is_nan() && old.b[0].is_nan() && old.d.is_none());
        let err = serde_json::from_str::<T>(r#"{"a":"lots","b":[],"c":[]}"#).unwrap_err();
        assert!(err.to_string().contains("\"NaN\""), "{err}");
    }
}
