//! NumPy `.npy` files of float32: `cnnc predict` reads its inputs from one
//! and writes its outputs to another.
//!
//! Only what `numpy.save` writes for a float32 array is read: format 1.0 or
//! 2.0, `descr` `<f4`, C order. Nothing in the header is trusted: the bytes
//! its shape claims are compared with the bytes the file holds before any
//! buffer is allocated, so a crafted or cut-off file is an error, never an
//! allocation of the size it claims.

use super::checkpoint::write_atomic;
use super::data::DataError;
use ndarray::{ArrayD, IxDyn};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
const TO_FLOAT32: &str = "save it with numpy.save(path, x.astype(\"float32\"))";

/// Reads a float32 array from a `.npy` file.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, DataError> {
    let fail = |message: String| DataError::new(path, message);
    let io = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => fail("no such file".into()),
        io::ErrorKind::UnexpectedEof => fail("truncated: the file ends inside its data".into()),
        _ => fail(format!("cannot read: {e}")),
    };
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(fail("is a folder, not a .npy file".into()));
    }
    let mut left = meta.len();
    let mut take = |file: &mut File, n: u64| -> Result<Vec<u8>, DataError> {
        let cut = || {
            fail(format!(
                "truncated: the file ends inside its header ({} bytes)",
                meta.len()
            ))
        };
        if n > left {
            return Err(cut());
        }
        left -= n;
        let mut bytes = Vec::new();
        file.take(n).read_to_end(&mut bytes).map_err(io)?;
        // The file may have shrunk since its length was read.
        if bytes.len() as u64 != n {
            return Err(cut());
        }
        Ok(bytes)
    };

    let preamble = take(&mut file, meta.len().min(8))?;
    if !preamble.starts_with(MAGIC) {
        return Err(fail(
            "not a .npy file (it does not start with NumPy's magic string)".into(),
        ));
    }
    let header_len = match preamble[6..] {
        [1, 0] => take(&mut file, 2).map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))?,
        [2, 0] => take(&mut file, 4).map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))?,
        [major, minor] => {
            return Err(fail(format!(
                ".npy format version {major}.{minor}, cnnc reads 1.0 and 2.0"
            )));
        }
        _ => {
            return Err(fail(format!(
                "truncated: the file ends inside its header ({} bytes)",
                meta.len()
            )));
        }
    };
    let header = take(&mut file, header_len)?;
    let shape = std::str::from_utf8(&header)
        .map_err(|_| Refusal::garbled(&String::from_utf8_lossy(&header)))
        .and_then(parse_header)
        .map_err(|Refusal(message, help)| match help {
            Some(help) => fail(message).help(help),
            None => fail(message),
        })?;

    let count = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    let needed = count.and_then(|n| n.checked_mul(4));
    if needed != Some(left) {
        let claim = match needed {
            Some(n) => format!("needs {n} bytes of data"),
            None => "needs more bytes than any file holds".into(),
        };
        let what = if needed.is_some_and(|n| n < left) {
            "has bytes after its data"
        } else {
            "truncated"
        };
        return Err(fail(format!(
            "{what}: its shape {} {claim}, the file holds {left}",
            shape_text(&shape)
        )));
    }
    // `left` bytes are on disk, so the buffer is no larger than the file.
    let mut values = Vec::with_capacity(left as usize / 4);
    let mut chunk = vec![0u8; 1 << 16];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.read_exact(&mut chunk[..n]).map_err(io)?;
        values.extend(
            chunk[..n]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= n as u64;
    }
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| fail(e.to_string()))
}

/// Writes `data`, row-major of `shape`, to `path` as a float32 `.npy` file,
/// atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), DataError> {
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count != Some(data.len()) {
        return Err(DataError::new(
            path,
            format!("cannot write {} values as shape {}", data.len(), shape_text(shape)),
        ));
    }
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        shape_text(shape)
    );
    // Format 1.0 counts the header in 16 bits; 2.0 in 32, for huge shapes.
    let (version, width) = if dict.len() + 64 <= usize::from(u16::MAX) {
        (1u8, 2)
    } else {
        (2, 4)
    };
    // NumPy pads the header with spaces and a newline so the data starts
    // 64-byte aligned, which its memory mapping expects.
    let unpadded = MAGIC.len() + 2 + width + dict.len() + 1;
    let header = format!("{dict}{}\n", " ".repeat(unpadded.next_multiple_of(64) - unpadded));
    let mut bytes = Vec::with_capacity(unpadded + 64 + 4 * data.len());
    bytes.extend(MAGIC);
    bytes.extend([version, 0]);
    bytes.extend(&(header.len() as u32).to_le_bytes()[..width]);
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    write_atomic(path, &bytes).map_err(|e| DataError::new(path, format!("cannot write: {}", e.source)))
}

/// A shape as NumPy prints it: `()`, `(5,)`, `(3, 28, 28, 1)`.
pub fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Why a header is refused, and how to fix the file if we know.
struct Refusal(String, Option<&'static str>);

impl Refusal {
    fn garbled(header: &str) -> Refusal {
        let start: String = header.trim().chars().take(60).collect();
        Refusal(
            format!("not a .npy file: its header does not describe an array: {start:?}"),
            None,
        )
    }
}

/// The shape in a header such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> Result<Vec<usize>, Refusal> {
    let garbled = || Refusal::garbled(text);
    let mut c = Cursor(text);
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    if !c.eat('{') {
        return Err(garbled());
    }
    while !c.eat('}') {
        let key = c.string().ok_or_else(garbled)?;
        if !c.eat(':') {
            return Err(garbled());
        }
        match key {
            "descr" => descr = Some(c.string().ok_or_else(garbled)?),
            "fortran_order" => {
                fortran = match c.word() {
                    "True" => Some(true),
                    "False" => Some(false),
                    _ => return Err(garbled()),
                }
            }
            "shape" => shape = Some(c.tuple().ok_or_else(garbled)?),
            _ => return Err(garbled()),
        }
        if !c.eat(',') && !c.0.trim_start().starts_with('}') {
            return Err(garbled());
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(garbled());
    };
    if !c.0.trim().is_empty() {
        return Err(garbled());
    }
    if descr != "<f4" {
        return Err(Refusal(
            format!("holds {} (descr '{descr}'), cnnc reads float32", dtype_name(descr)),
            Some(TO_FLOAT32),
        ));
    }
    if fortran {
        return Err(Refusal(
            "holds its array in Fortran order, cnnc reads C order".into(),
            Some("save it with numpy.save(path, numpy.ascontiguousarray(x))"),
        ));
    }
    Ok(shape)
}

/// A NumPy type string in words: `<f8` is float64, `>f4` big-endian float32.
fn dtype_name(descr: &str) -> String {
    const NAMES: [(&str, &str); 14] = [
        ("f2", "float16"),
        ("f4", "float32"),
        ("f8", "float64"),
        ("i1", "int8"),
        ("i2", "int16"),
        ("i4", "int32"),
        ("i8", "int64"),
        ("u1", "uint8"),
        ("u2", "uint16"),
        ("u4", "uint32"),
        ("u8", "uint64"),
        ("b1", "bool"),
        ("c8", "complex64"),
        ("c16", "complex128"),
    ];
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    match NAMES.iter().find(|(c, _)| *c == code) {
        Some((_, name)) if descr.starts_with('>') && !code.ends_with('1') => format!("big-endian {name}"),
        Some((_, name)) => (*name).to_string(),
        None => "values of another type".into(),
    }
}

/// The unparsed rest of a header.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn eat(&mut self, c: char) -> bool {
        match self.0.trim_start().strip_prefix(c) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    /// A quoted string, in single or double quotes.
    fn string(&mut self) -> Option<&'a str> {
        let text = self.0.trim_start();
        let quote = text.chars().next().filter(|q| *q == '\'' || *q == '"')?;
        let body = &text[1..];
        let end = body.find(quote)?;
        self.0 = &body[end + 1..];
        Some(&body[..end])
    }

    fn word(&mut self) -> &'a str {
        let text = self.0.trim_start();
        let end = text.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(text.len());
        self.0 = &text[end..];
        &text[..end]
    }

    /// A tuple of sizes: `()`, `(5,)`, `(3, 4)`; Python 2 wrote `(3L, 4L)`.
    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat('(') {
            return None;
        }
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Some(dims);
            }
            let word = self.word();
            dims.push(word.strip_suffix('L').unwrap_or(word).parse().ok()?);
            // `(5)` is a number in Python, not a tuple.
            if !self.eat(',') {
                return (dims.len() > 1 && self.eat(')')).then_some(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file path unique to this process and test.
    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cnnc-npy-{}-{name}.npy", std::process::id()))
    }

    /// A `.npy` file with the given header dict and data bytes, as NumPy lays it out.
    fn raw(name: &str, dict: &str, data: &[u8]) -> PathBuf {
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((dict.len() as u16 + 1).to_le_bytes());
        bytes.extend(dict.as_bytes());
        bytes.push(b'\n');
        bytes.extend(data);
        let path = scratch(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn refused(path: &Path, what: &str) -> String {
        let shown = read_f32(path).expect_err("the file is refused").to_string();
        std::fs::remove_file(path).ok();
        let first = shown.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("{}: ", path.display())), "{shown}");
        assert!(shown.contains(what), "{what:?} not in {shown}");
        shown
    }

    #[test]
    fn round_trip() {
        let path = scratch("round");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_f32(&path, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 4 * 24) % 64, 0, "the data starts 64-byte aligned");
        let back = read_f32(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back.shape(), &[2, 3, 4]);
        assert_eq!(back.iter().copied().collect::<Vec<_>>(), data);
    }

    #[test]
    fn zero_and_one_dimensional_arrays() {
        let path = scratch("scalar");
        write_f32(&path, &[], &[7.5]).unwrap();
        let scalar = read_f32(&path).unwrap();
        assert_eq!(scalar.shape(), &[] as &[usize]);
        assert_eq!(scalar.iter().copied().collect::<Vec<_>>(), [7.5]);
        let vector = raw(
            "vector",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            &[0; 8],
        );
        assert_eq!(read_f32(&vector).unwrap().shape(), &[2]);
        for p in [path, vector] {
            std::fs::remove_file(p).ok();
        }
    }

    #[test]
    fn headers_as_other_writers_format_them() {
        let dict = "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}";
        let path = raw("python2", dict, &[0; 8]);
        assert_eq!(read_f32(&path).unwrap().shape(), &[1, 2]);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn version_2_header() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend([2, 0]);
        bytes.extend((dict.len() as u32).to_le_bytes());
        bytes.extend(dict.as_bytes());
        bytes.extend(1.5f32.to_le_bytes());
        let path = scratch("v2");
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_f32(&path).unwrap().iter().copied().collect::<Vec<_>>(), [1.5]);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn missing_file() {
        refused(&scratch("missing"), "no such file");
    }

    #[test]
    fn truncated_data() {
        let path = raw(
            "short",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
            &[0; 40],
        );
        refused(
            &path,
            "truncated: its shape (3, 4) needs 48 bytes of data, the file holds 40",
        );
    }

    #[test]
    fn truncated_header() {
        let path = scratch("cut");
        std::fs::write(&path, b"\x93NUMPY\x01\x00\xff\x00{'descr'").unwrap();
        refused(&path, "truncated: the file ends inside its header (18 bytes)");
    }

    #[test]
    fn huge_claimed_shape_is_refused_before_allocating() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 28, 28, 1), }";
        refused(
            &raw("huge", dict, &[0; 16]),
            "needs 313600000000000 bytes of data, the file holds 16",
        );
        let overflow = "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 3), }";
        refused(&raw("overflow", overflow, &[]), "more bytes than any file holds");
    }

    #[test]
    fn other_dtypes_are_named() {
        let f64 = raw(
            "f64",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        let shown = refused(&f64, "holds float64 (descr '<f8'), cnnc reads float32");
        assert!(shown.contains("x.astype(\"float32\")"), "{shown}");
        let big = raw(
            "big",
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        refused(&big, "big-endian float32");
        let bytes = raw(
            "u8",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }",
            &[0; 1],
        );
        refused(&bytes, "holds uint8");
    }

    #[test]
    fn fortran_order_is_refused() {
        let path = raw(
            "fortran",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &[0; 16],
        );
        refused(&path, "Fortran order");
    }

    #[test]
    fn garbage_is_not_a_npy_file() {
        let path = scratch("garbage");
        std::fs::write(&path, b"PK\x03\x04 this is a zip, not an array").unwrap();
        refused(&path, "not a .npy file");
        for (i, dict) in [
            "{'descr': '<f4'}",
            "{'descr': '<f4', 'shape': (5), 'fortran_order': False}",
            "[1, 2]",
        ]
        .iter()
        .enumerate()
        {
            refused(
                &raw(&format!("dict{i}"), dict, &[0; 20]),
                "header does not describe an array",
            );
        }
    }

    #[test]
    fn writing_checks_the_shape() {
        let path = scratch("mismatch");
        let shown = write_f32(&path, &[2, 2], &[1.0]).unwrap_err().to_string();
        assert!(shown.contains("cannot write 1 values as shape (2, 2)"), "{shown}");
        assert!(!path.exists());
    }
}
