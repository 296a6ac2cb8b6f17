//! PyTorch checkpoints (`.pth`, as `torch.save` writes them since 1.6) read without
//! Python: a zip archive holding `PREFIX/data.pkl` (a pickle of the saved object, with
//! tensors as persistent references to storages) and `PREFIX/data/KEY` (the raw,
//! little-endian bytes of each storage).
//!
//! Why our own reader: no maintained Rust crate reads this format without linking Python;
//! tch's `Tensor::load` reads only what libtorch's C++ `torch::save` writes. The pickle
//! machine here runs only the opcodes `torch.save` emits for tensors, dicts, lists,
//! tuples and scalars (protocols 2 to 4), and builds only tensors
//! (`torch._utils._rebuild_tensor_v2`) and `collections.OrderedDict`; any other global is
//! kept as an opaque object, so a file can never make it call code. What it reads is
//! checked against the storages (sizes, strides, offsets), so a malformed file is an
//! error, never an out-of-bounds read.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// A pickled value.
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool (its value is not needed).
    Bool,
    Int(i64),
    /// A float (its value is not needed).
    Float,
    Str(String),
    /// Bytes (not needed).
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name`, not called.
    Global(String, String),
    /// A storage reference: key in `data/` and element kind.
    Storage(String, Kind),
    /// A tensor view of a storage.
    Tensor {
        key: String,
        kind: Kind,
        offset: usize,
        size: Vec<i64>,
        stride: Vec<i64>,
    },
    /// Something else (an unknown global applied to arguments).
    Object(String),
}

/// Most values that memo reads may copy in one file.
const MAX_COPIED_NODES: usize = 10_000_000;
/// Largest storage entry read (bytes).
const MAX_STORAGE_BYTES: u64 = 16 << 30;

impl Value {
    /// Values in this one; counting stops past `limit`.
    fn nodes(&self, limit: usize) -> usize {
        let mut n = 1;
        let mut todo: Vec<&Value> = vec![self];
        while let Some(v) = todo.pop() {
            if n > limit {
                break;
            }
            match v {
                Value::Tuple(t) | Value::List(t) => {
                    n += t.len();
                    todo.extend(t);
                }
                Value::Dict(d) => {
                    n += 2 * d.len();
                    for (k, x) in d {
                        todo.push(k);
                        todo.push(x);
                    }
                }
                _ => {}
            }
        }
        n
    }

    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float => "a float".into(),
            Value::Str(_) => "a string".into(),
            Value::Bytes => "bytes".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage(..) => "a storage".into(),
            Value::Tensor { .. } => "a tensor".into(),
            Value::Object(what) => format!("an object made by {what}"),
        }
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// Runs the pickle in `data` and returns the object it builds.
fn unpickle(data: &[u8], path: &Path) -> Result<Value> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut copied = 0usize;
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8]> {
        let s = data
            .get(*i..*i + n)
            .ok_or_else(|| bad(path, "data.pkl ends inside an instruction"))?;
        *i += n;
        Ok(s)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let line = |i: &mut usize| -> Result<String> {
        let rest = &data[*i..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| bad(path, "data.pkl: unterminated GLOBAL"))?;
        *i += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let pop = |stack: &mut Vec<Value>| {
        stack
            .pop()
            .ok_or_else(|| bad(path, "data.pkl: stack underflow"))
    };
    let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>> {
        let m = marks.pop().ok_or_else(|| bad(path, "data.pkl: no MARK"))?;
        if m > stack.len() {
            return Err(bad(path, "data.pkl: MARK beyond the stack"));
        }
        Ok(stack.split_off(m))
    };
    loop {
        let op = *take(&mut i, 1)?.first().expect("one byte");
        match op {
            0x80 => {
                take(&mut i, 1)?; // PROTO
            }
            0x95 => {
                take(&mut i, 8)?; // FRAME
            }
            b'.' => return pop(&mut stack), // STOP
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 | 0x89 => stack.push(Value::Bool),
            b'K' => {
                let v = take(&mut i, 1)?[0];
                stack.push(Value::Int(v as i64));
            }
            b'M' => {
                let b = take(&mut i, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
            }
            b'J' => {
                let b = take(&mut i, 4)?;
                stack.push(Value::Int(
                    i32::from_le_bytes(b.try_into().expect("4")) as i64
                ));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return Err(bad(path, "data.pkl: integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (k, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                take(&mut i, 8)?;
                stack.push(Value::Float);
            }
            b'X' | 0x8c | b'T' | b'U' => {
                let n = match op {
                    b'X' | b'T' => u32_at(take(&mut i, 4)?) as usize,
                    _ => take(&mut i, 1)?[0] as usize,
                };
                let s = String::from_utf8_lossy(take(&mut i, n)?).into_owned();
                stack.push(Value::Str(s));
            }
            b'B' | b'C' => {
                let n = if op == b'B' {
                    u32_at(take(&mut i, 4)?) as usize
                } else {
                    take(&mut i, 1)?[0] as usize
                };
                take(&mut i, n)?;
                stack.push(Value::Bytes);
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| bad(path, "data.pkl: BINPUT on an empty stack"))?,
                );
            }
            b'r' => {
                let k = u32_at(take(&mut i, 4)?);
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| bad(path, "data.pkl: LONG_BINPUT on an empty stack"))?,
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| bad(path, "data.pkl: MEMOIZE on an empty stack"))?,
                );
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    take(&mut i, 1)?[0] as u32
                } else {
                    u32_at(take(&mut i, 4)?)
                };
                let v = memo
                    .get(&k)
                    .ok_or_else(|| bad(path, format!("data.pkl: memo {k} is not set")))?;
                // Memo reads copy: bound the total, so that nested re-reads cannot blow up.
                copied += v.nodes(MAX_COPIED_NODES);
                if copied > MAX_COPIED_NODES {
                    return Err(bad(path, "data.pkl: too many repeated references"));
                }
                stack.push(v.clone());
            }
            b'c' => {
                let module = line(&mut i)?;
                let name = line(&mut i)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err(bad(path, "data.pkl: STACK_GLOBAL needs two strings")),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(bad(path, "data.pkl: stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Dict(pairs(items, path)?));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    Some(Value::Object(_)) => {} // the state of an opaque object
                    _ => return Err(bad(path, "data.pkl: APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    Some(Value::Object(_)) => {} // the state of an opaque object
                    _ => return Err(bad(path, "data.pkl: APPENDS to a non-list")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    Some(Value::Object(_)) => {} // the state of an opaque object
                    _ => return Err(bad(path, "data.pkl: SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                let kv = pairs(items, path)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(kv),
                    Some(Value::Object(_)) => {} // the state of an opaque object
                    _ => return Err(bad(path, "data.pkl: SETITEMS on a non-dict")),
                }
            }
            b'Q' => {
                // BINPERSID: ('storage', type, key, location, numel)
                let pid = pop(&mut stack)?;
                let Value::Tuple(t) = pid else {
                    return Err(bad(path, "data.pkl: a persistent id that is not a tuple"));
                };
                match t.as_slice() {
                    [
                        Value::Str(tag),
                        Value::Global(_, ty),
                        Value::Str(key),
                        _,
                        Value::Int(_),
                    ] if tag == "storage" => {
                        let kind = storage_kind(ty).ok_or_else(|| {
                            bad(path, format!("data.pkl: unsupported storage type {ty}"))
                        })?;
                        stack.push(Value::Storage(key.clone(), kind));
                    }
                    _ => return Err(bad(path, "data.pkl: a persistent id that is not a storage")),
                }
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ: callable(*args)
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(call(callable, args, path)?);
            }
            b'b' => {
                // BUILD: the state of OrderedDict (`_metadata`) and the like is ignored.
                pop(&mut stack)?;
                if stack.is_empty() {
                    return Err(bad(path, "data.pkl: BUILD on an empty stack"));
                }
            }
            other => {
                return Err(bad(
                    path,
                    format!(
                        "data.pkl: unsupported pickle opcode 0x{other:02x} at byte {}",
                        i - 1
                    ),
                ));
            }
        }
    }
}

fn pairs(items: Vec<Value>, path: &Path) -> Result<Vec<(Value, Value)>> {
    if items.len() % 2 != 0 {
        return Err(bad(path, "data.pkl: odd number of dict items"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn ints(v: &Value, path: &Path) -> Result<Vec<i64>> {
    match v {
        Value::Tuple(t) | Value::List(t) => t
            .iter()
            .map(|x| match x {
                Value::Int(n) => Ok(*n),
                _ => Err(bad(
                    path,
                    "data.pkl: a tensor size or stride that is not an int",
                )),
            })
            .collect(),
        _ => Err(bad(
            path,
            "data.pkl: a tensor size or stride that is not a tuple",
        )),
    }
}

/// Applies a global: tensors and ordered dicts are built, anything else stays opaque.
fn call(callable: Value, args: Value, path: &Path) -> Result<Value> {
    let Value::Global(module, name) = &callable else {
        return Ok(Value::Object(callable.describe()));
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") => {
            let Value::Tuple(a) = args else {
                return Err(bad(path, "data.pkl: _rebuild_tensor_v2 without arguments"));
            };
            match a.as_slice() {
                [
                    Value::Storage(key, kind),
                    Value::Int(offset),
                    size,
                    stride,
                    ..,
                ] => Ok(Value::Tensor {
                    key: key.clone(),
                    kind: *kind,
                    offset: usize::try_from(*offset).map_err(|_| {
                        bad(path, format!("data.pkl: negative tensor offset {offset}"))
                    })?,
                    size: ints(size, path)?,
                    stride: ints(stride, path)?,
                }),
                _ => Err(bad(
                    path,
                    "data.pkl: unexpected _rebuild_tensor_v2 arguments",
                )),
            }
        }
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(Vec::new())),
        // A Parameter (saved with keep_vars=True): its tensor.
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => match args {
            Value::Tuple(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
            _ => Err(bad(path, "data.pkl: _rebuild_parameter without a tensor")),
        },
        _ => Ok(Value::Object(format!("{module}.{name}"))),
    }
}

/// Where a state dict may sit in a saved object: at the top, or under one of these keys.
const NESTING_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "net"];

/// Reads the tensors of a state dict saved with `torch.save` (at the top of the file, or
/// under `state_dict`, `model`, `model_state_dict` or `net`), as `(name, tensor)` pairs in
/// file order, contiguous, with their saved kinds.
pub fn read_pth(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(
            path,
            format!("not a PyTorch zip checkpoint ({e}); files of torch < 1.6 are not read"),
        )
    })?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(str::to_string)
        .ok_or_else(|| bad(path, "no data.pkl in the archive"))?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .expect("suffix")
        .to_string();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| bad(path, format!("{pkl_name}: {e}")))?;
    let mut order = String::new();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let _ = f.read_to_string(&mut order);
    }
    if order.trim() == "big" {
        return Err(bad(path, "big-endian storages are not supported"));
    }
    let root = unpickle(&pkl, path)?;
    let dict = state_dict(root, path)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(dict.len());
    for (k, v) in dict {
        let Value::Str(name) = k else {
            return Err(bad(path, "a state_dict key that is not a string"));
        };
        let Value::Tensor {
            key,
            kind,
            offset,
            size,
            stride,
        } = v
        else {
            return Err(bad(
                path,
                format!("entry {name} is {}, not a tensor", v.describe()),
            ));
        };
        if !storages.contains_key(&key) {
            let entry = format!("{prefix}data/{key}");
            let mut bytes = Vec::new();
            let f = zip
                .by_name(&entry)
                .map_err(|e| bad(path, format!("{entry} (storage of {name}): {e}")))?;
            if f.size() > MAX_STORAGE_BYTES {
                return Err(bad(path, format!("{entry}: {} bytes, too large", f.size())));
            }
            f.take(MAX_STORAGE_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| bad(path, format!("{entry} (storage of {name}): {e}")))?;
            storages.insert(key.clone(), bytes);
        }
        let bytes = &storages[&key];
        let elem = kind.elt_size_in_bytes();
        let numel = bytes.len() / elem;
        if size.len() != stride.len() || size.iter().chain(&stride).any(|&d| d < 0) {
            return Err(bad(
                path,
                format!("{name}: bad size {size:?} or stride {stride:?}"),
            ));
        }
        // The view's elements, and the last element it reaches, must lie inside the
        // storage: no overflow on hostile sizes, no view larger than its storage.
        let count = size.iter().try_fold(1i64, |a, &n| a.checked_mul(n));
        let reach = size.iter().zip(&stride).try_fold(0i64, |a, (&n, &s)| {
            if n == 0 {
                Some(a)
            } else {
                (n - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            }
        });
        let empty = size.contains(&0);
        let last = reach.and_then(|r| i64::try_from(offset).ok()?.checked_add(r));
        let inside = match (count, last) {
            (Some(c), Some(last)) => empty || (c <= numel as i64 && last < numel as i64),
            _ => false,
        };
        if !inside {
            return Err(bad(
                path,
                format!(
                    "{name}: the view (offset {offset}, size {size:?}, stride {stride:?}) \
                     reaches beyond its storage of {numel} elements"
                ),
            ));
        }
        let storage = Tensor::from_data_size(&bytes[..numel * elem], &[numel as i64], kind);
        let t = if empty {
            Tensor::zeros(size.as_slice(), (kind, tch::Device::Cpu))
        } else {
            storage
                .f_as_strided(size.as_slice(), stride.as_slice(), Some(offset as i64))
                .and_then(|v| v.f_contiguous())
                .map_err(|e| bad(path, format!("{name}: {e}")))?
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(path, format!("the state_dict holds {name} twice")));
        }
        out.push((name, t));
    }
    Ok(out)
}

/// The state dict inside a saved object.
fn state_dict(root: Value, path: &Path) -> Result<Vec<(Value, Value)>> {
    let Value::Dict(d) = root else {
        return Err(bad(
            path,
            format!("the saved object is {}, not a state_dict", root.describe()),
        ));
    };
    let is_tensors = d.iter().all(|(_, v)| matches!(v, Value::Tensor { .. }));
    if is_tensors && !d.is_empty() {
        return Ok(d);
    }
    for key in NESTING_KEYS {
        if let Some((_, Value::Dict(inner))) = d
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
        {
            return state_dict(Value::Dict(inner.clone()), path);
        }
    }
    let keys: Vec<String> = d
        .iter()
        .take(12)
        .map(|(k, v)| match k {
            Value::Str(s) => format!("{s} ({})", v.describe()),
            other => other.describe(),
        })
        .collect();
    Err(bad(
        path,
        format!(
            "no state_dict: the saved dict holds {} and none of {} is a dict of tensors",
            if keys.is_empty() {
                "nothing".to_string()
            } else {
                keys.join(", ")
            },
            NESTING_KEYS.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/transunet-micro")
            .join(name)
    }

    #[test]
    fn a_state_dict_saved_by_pytorch_reads_with_its_strides() {
        let flat: HashMap<String, Tensor> = read_pth(fixture("micro.pth"))
            .unwrap()
            .into_iter()
            .collect();
        let nested = read_pth(fixture("micro-nested.pth")).unwrap();
        assert_eq!(flat.len(), 123);
        assert_eq!(nested.len(), flat.len());
        for (name, t) in &nested {
            let key = name.strip_prefix("module.").expect("DataParallel prefix");
            let f = &flat[key];
            assert_eq!(f.size(), t.size(), "{key}");
            assert_eq!(f.kind(), t.kind(), "{key}");
            assert!(f.equal(t), "{key} differs");
        }
        // The transposed view saved in micro.pth is read as the matrix it shows.
        let q = &flat["transformer.encoder.layer.0.attn.query.weight"];
        assert_eq!(q.size(), [32, 32]);
    }

    #[test]
    fn files_that_are_not_state_dicts_are_clear_errors() {
        let e = read_pth(fixture("micro-unknown-nesting.pth"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no state_dict") && e.contains("weights (a dict)"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("slimseg-pth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pth");
        std::fs::write(&junk, b"not a zip").unwrap();
        let e = read_pth(&junk).unwrap_err().to_string();
        assert!(
            e.contains("not a PyTorch zip checkpoint") && e.contains("junk.pth"),
            "{e}"
        );
        // A zip whose pickle is not one torch.save writes, or names a missing storage.
        let zipped = |name: &str, pkl: &[u8]| {
            let p = dir.join(name);
            let mut w = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
            w.start_file("archive/data.pkl", zip::write::FileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, pkl).unwrap();
            w.finish().unwrap();
            p
        };
        let e = read_pth(zipped("op.pth", b"\x80\x02\xff"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported pickle opcode 0xff"), "{e}");
        let e = read_pth(zipped("empty.pth", b"\x80\x02"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends inside an instruction"), "{e}");
        // {"w": _rebuild_tensor_v2(storage "0" (float, 4), 0, (2,), (1,), False, {})}
        let pkl = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(\
                    (X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000\
                    X\x03\x00\x00\x00cpuK\x04tQK\x00K\x02\x85K\x01\x85\x89}tRs.";
        let e = read_pth(zipped("nostorage.pth", pkl))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("archive/data/0") && e.contains("storage of w"),
            "{e}"
        );
        let bytes = std::fs::read(fixture("micro.pth")).unwrap();
        let cut = dir.join("cut.pth");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_pth(&cut).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
