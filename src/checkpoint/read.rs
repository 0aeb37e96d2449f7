//! Reading a checkpoint: each file's header, on several threads, checked file by file in
//! order as the results arrive; then the model order of all the tensors.

use std::sync::{mpsc, Mutex};

use ahash::RandomState;

use super::checks::Checks;
use super::error::{bad, CheckpointError, Problem};
use super::header::{parse_header, Header, MAX_HEADER_SIZE};
use super::index::{not_index, parse_index, IndexTable, WeightMap};
use super::order::model_order;
use super::source::{
    format_of, not_safetensors, shard_name, shard_problem, Checkpoint, Layout, Source,
};
use crate::error::{Error, Result};

/// Reads and parses the header of one safetensors file: 8 bytes of length, then the JSON,
/// read into `buffer` (a thread that reads many files keeps one buffer instead of allocating,
/// and faulting in, fresh memory for each).
fn read_file(source: &dyn Source, name: &str, buffer: &mut Vec<u8>) -> Result<Header> {
    let file = source.show(name);
    let io = |e: std::io::Error| bad(&file, None, Problem::CannotRead(e.to_string()));
    let file_len = source.len(name).map_err(io)?;
    if file_len < 8 {
        return Err(bad(&file, None, Problem::TooShort { len: file_len }));
    }
    buffer.clear();
    source.read_range(name, 0, 8, buffer).map_err(io)?;
    let cut = |read: usize, len: u64| Problem::HeaderCut {
        read: read as u64,
        len,
    };
    let Ok(len_bytes) = <[u8; 8]>::try_from(buffer.as_slice()) else {
        return Err(bad(&file, None, cut(buffer.len(), 8)));
    };
    let header_len = u64::from_le_bytes(len_bytes);
    // A file that is not safetensors is named by its format where its first bytes show one,
    // only when they make no possible header length (so a safetensors file never is).
    let impossible = header_len > MAX_HEADER_SIZE || header_len > file_len - 8;
    if let Some(format) = format_of(&len_bytes).filter(|_| impossible) {
        return Err(not_safetensors(source, name, format));
    }
    if header_len > MAX_HEADER_SIZE {
        let problem = Problem::HeaderLengthTooLarge { len: header_len };
        return Err(bad(&file, None, problem));
    }
    if header_len > file_len - 8 {
        let problem = Problem::HeaderPastEnd {
            len: header_len,
            file_len,
        };
        return Err(bad(&file, None, problem));
    }
    // Read into spare capacity: zeroing the buffer first would touch every page twice.
    buffer.clear();
    buffer.reserve(header_len as usize);
    source.read_range(name, 8, header_len, buffer).map_err(io)?;
    if buffer.len() as u64 != header_len {
        return Err(bad(&file, None, cut(buffer.len(), header_len)));
    }
    parse_header(&file, buffer, file_len - 8 - header_len)
}

/// Header read results as they arrive: `(submission id, result)`.
pub(super) type Arrivals<'a> = &'a mut dyn Iterator<Item = (usize, Result<Header>)>;

/// Reads headers from `source` on `workers` threads while the calling thread runs `feed`,
/// which hands out file names with `submit` (a file's id is its submission order; `feed` may
/// still be parsing an index). Then `consume` gets what `feed` returned, the number of files,
/// and the results as they arrive, so it can check early files while later ones are still
/// being read. With no workers, each file is read as it is submitted.
pub(super) fn read_headers<T, R>(
    source: &dyn Source,
    workers: usize,
    feed: impl FnOnce(&mut dyn FnMut(&str)) -> T,
    consume: impl FnOnce(T, usize, Arrivals<'_>) -> R,
) -> R {
    if workers == 0 {
        let mut results = Vec::new();
        let mut buffer = Vec::new();
        let fed = feed(&mut |name| results.push(read_file(source, name, &mut buffer)));
        let total = results.len();
        return consume(fed, total, &mut results.into_iter().enumerate());
    }
    let (jobs, queue) = mpsc::channel::<(usize, String)>();
    let queue = Mutex::new(queue);
    let (finished, done) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (queue, finished) = (&queue, finished.clone());
            scope.spawn(move || {
                let mut buffer = Vec::new();
                loop {
                    // The lock is held only to take the next job off the queue.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => break,
                    };
                    let Ok((id, name)) = job else { break };
                    let result = read_file(source, &name, &mut buffer);
                    if finished.send((id, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(finished);
        let mut submitted = 0;
        let fed = feed(&mut |name| {
            // A send fails only when every worker is gone; then the results come up short,
            // which `Checks::finish` reports.
            let _ = jobs.send((submitted, name.to_owned()));
            submitted += 1;
        });
        drop(jobs);
        consume(fed, submitted, &mut done.iter())
    })
}

/// Files read by one thread before the next is worth starting: below this, one thread.
const FILES_PER_THREAD: usize = 8;

/// The checked headers of a checkpoint's files, in file order (the shards of an index by
/// name), each shown to `observe` (with the number of files) once it and those before it are
/// checked, while later ones may still be read.
pub(super) fn checked_headers(
    checkpoint: &Checkpoint,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(&Header, usize),
) -> Result<Vec<Header>> {
    let source = checkpoint.source();
    match checkpoint.layout() {
        Layout::Files(files) => read_headers(
            source,
            threads.min(files.len() / FILES_PER_THREAD),
            |submit| files.iter().for_each(|file| submit(file)),
            |(), total, arrivals| {
                let order: Vec<usize> = (0..total).collect();
                let hasher = RandomState::new();
                let checks = Checks::new(source, files, &hasher, None);
                checks.run(&order, arrivals, progress, observe)
            },
        ),
        Layout::Index(index) => index_headers(source, index, threads, progress, observe),
    }
}

/// The checked headers of the shards an index names, in file-name order.
fn index_headers(
    source: &dyn Source,
    index: &str,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(&Header, usize),
) -> Result<Vec<Header>> {
    let shown = source.show(index);
    let text = source
        .read_whole(index)
        .map_err(|e| bad(&shown, None, Problem::CannotRead(e.to_string())))?;
    let text = std::str::from_utf8(&text).map_err(|e| not_index(&shown, &e))?;
    read_headers(
        source,
        threads.max(1),
        |submit| {
            // Each shard's name, by shard id (the order shards first appear, as submitted).
            let mut names = Vec::new();
            let mut outside = None;
            let parsed = parse_index(text, &mut |entry: &str| {
                if outside.is_some() {
                    return;
                }
                match shard_name(source, index, entry) {
                    Ok(name) => {
                        submit(&name);
                        names.push(name);
                    }
                    Err(error) => outside = Some(error),
                }
            });
            outside.map_or(Ok((parsed, names)), Err)
        },
        |fed, _, arrivals| {
            let (parsed, names) = fed?;
            let WeightMap {
                shards,
                mut entries,
            } = parsed.map_err(|e| not_index(&shown, &e))?;
            // Shards by file name, so errors and the order of equal names do not depend on
            // the order the index happens to list them in.
            let mut by_name: Vec<usize> = (0..shards.len()).collect();
            by_name.sort_unstable_by(|&a, &b| shards[a].cmp(&shards[b]));
            let mut place = vec![0; shards.len()];
            for (at, &id) in by_name.iter().enumerate() {
                place[id] = at;
            }
            let files: Vec<String> = by_name.iter().map(|&id| names[id].clone()).collect();
            for listed in &mut entries {
                listed.shard = place[listed.shard];
            }
            for (at, file) in files.iter().enumerate() {
                if let Some(problem) = shard_problem(source, file, &shards[by_name[at]]) {
                    let tensor = entries
                        .iter()
                        .filter(|listed| listed.shard == at)
                        .map(|listed| listed.tensor.as_ref())
                        .min()
                        .unwrap_or("");
                    return Err(bad(&shown, Some(tensor), problem));
                }
            }
            let hasher = RandomState::new();
            let table = IndexTable::new(&shown, entries, &hasher)?;
            let checks = Checks::new(source, &files, &hasher, Some(table));
            checks.run(&place, arrivals, progress, observe)
        },
    )
}

/// A tensor's place: (file, position in its header).
pub(super) type Place = (u32, u32);

/// The model order of the tensors of `headers`, as their places, and where
/// each file's tensors start in file order. `orders`: each file's model order while the files
/// followed the model ([`super::order::FileOrder`]); put one after another, they are the
/// order. Otherwise the names of all files are sorted once here.
pub(super) fn model_order_of(
    headers: &[Header],
    orders: &[Option<Vec<u32>>],
) -> Result<(Vec<Place>, Vec<u32>)> {
    let mut seen = Vec::with_capacity(headers.len());
    let mut count = 0u32;
    for header in headers {
        seen.push(count);
        count = u32::try_from(header.len())
            .ok()
            .and_then(|len| count.checked_add(len))
            .ok_or_else(|| Error::from(CheckpointError::TooManyTensors))?;
    }
    let mut order = Vec::with_capacity(count as usize);
    if orders.iter().all(Option::is_some) {
        for (file, positions) in orders.iter().flatten().enumerate() {
            order.extend(positions.iter().map(|&at| (file as u32, at)));
        }
    } else {
        let mut names = Vec::with_capacity(count as usize);
        let mut places = Vec::with_capacity(count as usize);
        for (file, header) in headers.iter().enumerate() {
            for (at, (name, _)) in header.iter().enumerate() {
                names.push(name);
                places.push((file as u32, at as u32));
            }
        }
        order.extend(model_order(&names).iter().map(|&i| places[i as usize]));
    }
    Ok((order, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::source::LocalFiles;
    use crate::checkpoint::tests::{raw, Folder};

    #[test]
    fn readers_give_results_by_submission_order() {
        let folder = Folder::new("readers");
        let files: Vec<String> = (0..20)
            .map(|i| {
                let header = if i == 7 {
                    "[]".to_owned()
                } else {
                    format!(
                        r#"{{"t{i}":{{"dtype":"F32","shape":[{i}],"data_offsets":[0,{}]}}}}"#,
                        4 * i
                    )
                };
                let path = folder.write(&format!("{i}.safetensors"), raw(&header, 4 * i as u64));
                path.to_string_lossy().into_owned()
            })
            .collect();
        for workers in [0, 1, 3] {
            let (fed, total, mut results) = read_headers(
                &LocalFiles::default(),
                workers,
                |submit| {
                    files.iter().for_each(|f| submit(f));
                    "fed"
                },
                |fed, total, arrivals| (fed, total, arrivals.collect::<Vec<_>>()),
            );
            assert_eq!((fed, total), ("fed", 20), "{workers} workers");
            results.sort_by_key(|(id, _)| *id);
            assert_eq!(results.len(), 20);
            for (i, (id, result)) in results.iter().enumerate() {
                assert_eq!(*id, i);
                match result {
                    Ok(header) => {
                        assert_eq!(header.name(&header.tensors[0]), format!("t{i}"))
                    }
                    Err(e) => assert!(i == 7 && e.to_string().contains("7.safetensors"), "{e}"),
                }
            }
        }
    }
}
