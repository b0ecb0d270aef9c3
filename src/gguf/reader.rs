//! Bounded reads of GGUF values. Every length is checked against what is left of the file
//! before it is read or allocated, and only values kvlab uses are kept.

use std::io::{Read, Seek};

/// Limits that keep a hostile header from costing memory or time.
pub(super) const MAX_KEYS: u64 = 1 << 20;
pub(super) const MAX_KEY_LEN: u64 = 1 << 16;
pub(super) const MAX_STRING_KEPT: u64 = 1 << 20;

/// A metadata value kvlab keeps (numbers, short strings); everything else is skipped.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Int(i128),
    Float,
    Str(String),
    Ints(Vec<i128>),
    Other,
}

pub(super) enum ParseError {
    Io(std::io::Error),
    Bad(String),
}

impl From<std::io::Error> for ParseError {
    fn from(e: std::io::Error) -> Self {
        ParseError::Io(e)
    }
}

pub(super) struct Reader<R> {
    pub(super) inner: R,
    pub(super) size: u64,
    pub(super) pos: u64,
}

impl<R: Read + Seek> Reader<R> {
    pub(super) fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    pub(super) fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    /// A length that must fit in what is left of the file.
    pub(super) fn len(&mut self, what: &str, unit: u64) -> Result<u64, ParseError> {
        let n = self.u64()?;
        let left = self.size.saturating_sub(self.pos);
        if n.checked_mul(unit).is_none_or(|b| b > left) {
            return Err(ParseError::Bad(format!(
                "{what} of {n} items at byte {} runs past the end of the file; the file may be truncated",
                self.pos
            )));
        }
        Ok(n)
    }
    pub(super) fn skip(&mut self, n: u64) -> Result<(), ParseError> {
        let n = i64::try_from(n).map_err(|_| ParseError::Bad("length overflow".into()))?;
        self.inner.seek_relative(n)?;
        self.pos += n as u64;
        if self.pos > self.size {
            return Err(ParseError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
    pub(super) fn string(&mut self, keep_up_to: u64) -> Result<Option<String>, ParseError> {
        let n = self.len("a string", 1)?;
        if n > keep_up_to {
            self.skip(n)?;
            return Ok(None);
        }
        let mut b = vec![0u8; n as usize];
        self.inner.read_exact(&mut b)?;
        self.pos += n;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }
    pub(super) fn scalar_int(&mut self, ty: u32) -> Result<Option<i128>, ParseError> {
        Ok(Some(match ty {
            0 => u8::from_le_bytes(self.bytes()?) as i128,
            1 => i8::from_le_bytes(self.bytes()?) as i128,
            2 => u16::from_le_bytes(self.bytes()?) as i128,
            3 => i16::from_le_bytes(self.bytes()?) as i128,
            4 => u32::from_le_bytes(self.bytes()?) as i128,
            5 => i32::from_le_bytes(self.bytes()?) as i128,
            7 => u8::from_le_bytes(self.bytes()?) as i128,
            10 => u64::from_le_bytes(self.bytes()?) as i128,
            11 => i64::from_le_bytes(self.bytes()?) as i128,
            _ => return Ok(None),
        }))
    }
    pub(super) fn value(&mut self, ty: u32, depth: u32) -> Result<Value, ParseError> {
        if let Some(i) = self.scalar_int(ty)? {
            return Ok(Value::Int(i));
        }
        match ty {
            6 => {
                self.skip(4)?;
                Ok(Value::Float)
            }
            12 => {
                self.skip(8)?;
                Ok(Value::Float)
            }
            8 => Ok(self
                .string(MAX_STRING_KEPT)?
                .map(Value::Str)
                .unwrap_or(Value::Other)),
            9 => {
                if depth > 2 {
                    return Err(ParseError::Bad("arrays nested too deeply".into()));
                }
                let elem = self.u32()?;
                let fixed = fixed_size(elem);
                let n = self.len("an array", fixed.unwrap_or(8))?;
                match fixed {
                    // Small integer arrays (per-layer head counts) are kept; the rest skipped.
                    Some(_) if elem != 6 && elem != 12 && n <= 4096 => {
                        let mut v = Vec::with_capacity(n as usize);
                        for _ in 0..n {
                            v.push(self.scalar_int(elem)?.unwrap_or(0));
                        }
                        Ok(Value::Ints(v))
                    }
                    Some(w) => {
                        self.skip(n * w)?;
                        Ok(Value::Other)
                    }
                    // Arrays of strings (a tokenizer's vocabulary) are skipped, not read.
                    None if elem == 8 => {
                        for _ in 0..n {
                            let len = self.len("a string", 1)?;
                            self.skip(len)?;
                        }
                        Ok(Value::Other)
                    }
                    None => {
                        for _ in 0..n {
                            self.value(elem, depth + 1)?;
                        }
                        Ok(Value::Other)
                    }
                }
            }
            other => Err(ParseError::Bad(format!(
                "unknown metadata value type {other} at byte {}",
                self.pos
            ))),
        }
    }
}

/// Byte size of a fixed-size GGUF value type.
pub(super) fn fixed_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}
