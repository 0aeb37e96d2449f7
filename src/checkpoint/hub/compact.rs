//! A checkpoint read ([`ReadAhead`]) as compact bytes, for devicemap's cache of a commit: a
//! warm plan reads this one file while the branch resolves instead of reading and parsing
//! every header and the index again (12 MB of headers and an 8 MB index for DeepSeek-V3).
//!
//! Little-endian: the dtypes' names; per header its names' string and per tensor `(name
//! begin, end, dtype, elements, bytes)`; each file's order; the model order; where each
//! file's tensors start; then an xxh3 of all that. Anything that does not add up is no
//! record (the checkpoint is then read as usual).

use xxhash_rust::xxh3::xxh3_64;

use crate::checkpoint::{Header, ReadAhead};
use crate::dtype::{from_safetensors_name, Dtype};

/// The start of the record, with its format's version.
const MAGIC: &[u8; 8] = b"DMREAD\x001";

pub fn to_bytes(read: &ReadAhead) -> Vec<u8> {
    let mut dtypes: Vec<Dtype> = Vec::new();
    for header in &read.headers {
        for tensor in &header.tensors {
            if !dtypes.contains(&tensor.dtype) {
                dtypes.push(tensor.dtype);
            }
        }
    }
    let mut out = MAGIC.to_vec();
    put(&mut out, dtypes.len() as u64);
    for dtype in &dtypes {
        let name = dtype.to_string();
        put(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
    put(&mut out, read.headers.len() as u64);
    for header in &read.headers {
        let (names, tensors) = header.parts();
        put(&mut out, names.len() as u64);
        out.extend_from_slice(names.as_bytes());
        put(&mut out, header.len() as u64);
        for ((begin, end), tensor) in tensors {
            let dtype = dtypes.iter().position(|d| *d == tensor.dtype).unwrap_or(0);
            for value in [
                begin as u64,
                end as u64,
                dtype as u64,
                tensor.elements,
                tensor.bytes,
            ] {
                put(&mut out, value);
            }
        }
    }
    for order in &read.orders {
        match order {
            None => put(&mut out, u64::MAX),
            Some(order) => put_all(&mut out, order.iter().map(|&at| at as u64), order.len()),
        }
    }
    let order = read
        .order
        .iter()
        .flat_map(|&(file, at)| [file as u64, at as u64]);
    put_all(&mut out, order, read.order.len() * 2);
    put_all(
        &mut out,
        read.seen.iter().map(|&s| s as u64),
        read.seen.len(),
    );
    let digest = xxh3_64(&out);
    put(&mut out, digest);
    out
}

pub fn from_bytes(bytes: &[u8]) -> Option<ReadAhead> {
    let (body, digest) = bytes.split_last_chunk::<8>()?;
    if xxh3_64(body) != u64::from_le_bytes(*digest) {
        return None;
    }
    let mut input = Input(body.strip_prefix(MAGIC)?);
    let mut dtypes = Vec::new();
    for _ in 0..input.count()? {
        let len = input.count()?;
        dtypes.push(from_safetensors_name(
            std::str::from_utf8(input.take(len)?).ok()?,
        )?);
    }
    let files = input.count()?;
    let mut headers = Vec::new();
    for _ in 0..files {
        let len = input.count()?;
        let names = String::from_utf8(input.take(len)?.to_vec()).ok()?;
        let mut tensors = Vec::new();
        for _ in 0..input.count()? {
            let [begin, end, dtype, elements, bytes] = [(); 5].map(|()| input.next());
            let name = (u32::try_from(begin?).ok()?, u32::try_from(end?).ok()?);
            let dtype = *dtypes.get(usize::try_from(dtype?).ok()?)?;
            tensors.push((name, dtype, elements?, bytes?));
        }
        headers.push(Header::from_parts(names, tensors.into_iter())?);
    }
    let mut orders = Vec::new();
    for header in &headers {
        let order = match input.next()? {
            u64::MAX => None,
            len => Some(input.positions(usize::try_from(len).ok()?, header.len())?),
        };
        orders.push(order);
    }
    let len = input.count()?;
    let flat = input.positions(len, u32::MAX as usize)?;
    let order: Vec<(u32, u32)> = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let in_range = |&(file, at): &(u32, u32)| {
        headers
            .get(file as usize)
            .is_some_and(|h| (at as usize) < h.len())
    };
    if len % 2 != 0 || !order.iter().all(in_range) {
        return None;
    }
    let len = input.count()?;
    let seen = input.positions(len, u32::MAX as usize)?;
    if seen.len() != headers.len() || !input.0.is_empty() {
        return None;
    }
    Some(ReadAhead {
        headers,
        orders,
        order,
        seen,
    })
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_all(out: &mut Vec<u8>, values: impl Iterator<Item = u64>, len: usize) {
    put(out, len as u64);
    values.for_each(|value| put(out, value));
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn next(&mut self) -> Option<u64> {
        let (value, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*value))
    }

    /// A length, no more than the bytes left could hold.
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.next()?)
            .ok()
            .filter(|&n| n <= self.0.len())
    }

    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let (taken, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(taken)
    }

    /// `len` positions, each below `below`.
    fn positions(&mut self, len: usize, below: usize) -> Option<Vec<u32>> {
        if len > self.0.len() / 8 {
            return None;
        }
        (0..len)
            .map(|_| {
                let at = u32::try_from(self.next()?).ok()?;
                ((at as usize) < below).then_some(at)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::parse_header;

    fn read() -> ReadAhead {
        let json = |names: &[(&str, &str)]| {
            let entries: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, (name, dtype))| {
                    let at = i * 8;
                    format!(
                        r#""{name}":{{"dtype":"{dtype}","shape":[2],"data_offsets":[{at},{}]}}"#,
                        at + 8
                    )
                })
                .collect();
            format!("{{{}}}", entries.join(","))
        };
        let first = json(&[("b.1.w", "F32"), ("b.0.w", "F32"), ("é", "I32")]);
        let second = json(&[("c.w", "U32")]);
        let headers = vec![
            parse_header("a", first.as_bytes(), 24).unwrap(),
            parse_header("b", second.as_bytes(), 8).unwrap(),
        ];
        ReadAhead {
            headers,
            orders: vec![Some(vec![1, 0, 2]), None],
            order: vec![(0, 1), (0, 0), (0, 2), (1, 0)],
            seen: vec![0, 3],
        }
    }

    #[test]
    fn a_read_round_trips() {
        let read = read();
        let back = from_bytes(&to_bytes(&read)).unwrap();
        assert_eq!(back.headers, read.headers);
        assert_eq!(back.orders, read.orders);
        assert_eq!(back.order, read.order);
        assert_eq!(back.seen, read.seen);
        let names: Vec<&str> = back.headers[0].iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"é"));
    }

    #[test]
    fn bytes_that_do_not_add_up_are_no_read() {
        let bytes = to_bytes(&read());
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(from_bytes(&bytes[..cut]).is_none(), "{cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(from_bytes(&flipped).is_none());
        // A place in the order past its file's tensors, with a digest that agrees: refused.
        let mut read = read();
        read.order.push((1, 5));
        assert!(from_bytes(&to_bytes(&read)).is_none());
    }
}
