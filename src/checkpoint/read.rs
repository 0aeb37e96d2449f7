//! Reading headers concurrently: one file's header, the thread pool, and an index's shards.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use ahash::RandomState;

use super::checks::Checks;
use super::error::{bad, Problem};
use super::header::{parse_header, Header, MAX_HEADER_SIZE};
use super::index::{not_index, parse_index, IndexTable, WeightMap};
use crate::error::Result;

/// Reads and parses the header of one safetensors file: 8 bytes of length, then the JSON,
/// read into `buffer` (a thread that reads many files keeps one buffer instead of allocating,
/// and faulting in, fresh memory for each).
fn read_file(path: &Path, buffer: &mut Vec<u8>) -> Result<Header> {
    let io = |e: std::io::Error| bad(path, None, Problem::CannotRead(e.to_string()));
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < 8 {
        return Err(bad(path, None, Problem::TooShort { len: file_len }));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_SIZE {
        let problem = Problem::HeaderLengthTooLarge { len: header_len };
        return Err(bad(path, None, problem));
    }
    if header_len > file_len - 8 {
        let problem = Problem::HeaderPastEnd {
            len: header_len,
            file_len,
        };
        return Err(bad(path, None, problem));
    }
    // Read into spare capacity: zeroing the buffer first would touch every page twice.
    buffer.clear();
    buffer.reserve(header_len as usize);
    file.take(header_len).read_to_end(buffer).map_err(io)?;
    if buffer.len() as u64 != header_len {
        let problem = Problem::HeaderCut {
            read: buffer.len() as u64,
            len: header_len,
        };
        return Err(bad(path, None, problem));
    }
    parse_header(path, buffer, file_len - 8 - header_len)
}

/// Header read results as they arrive: `(submission id, result)`.
pub(super) type Arrivals<'a> = &'a mut dyn Iterator<Item = (usize, Result<Header>)>;

/// Reads headers on `workers` threads while the calling thread runs `feed`, which hands out
/// files with `submit` (a file's id is its submission order; `feed` may still be parsing an
/// index). Then `consume` gets what `feed` returned, the number of files, and the results as
/// they arrive, so it can check early files while later ones are still being read. With no
/// workers, each file is read as it is submitted.
pub(super) fn read_headers<T, R>(
    workers: usize,
    feed: impl FnOnce(&mut dyn FnMut(&Path)) -> T,
    consume: impl FnOnce(T, usize, Arrivals<'_>) -> R,
) -> R {
    if workers == 0 {
        let mut results = Vec::new();
        let mut buffer = Vec::new();
        let fed = feed(&mut |file| results.push(read_file(file, &mut buffer)));
        let total = results.len();
        return consume(fed, total, &mut results.into_iter().enumerate());
    }
    let (jobs, queue) = mpsc::channel::<(usize, PathBuf)>();
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
                    let Ok((id, file)) = job else { break };
                    if finished.send((id, read_file(&file, &mut buffer))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(finished);
        let mut submitted = 0;
        let fed = feed(&mut |file| {
            // A send fails only when every worker is gone; then the results come up short,
            // which `Checks::finish` reports.
            let _ = jobs.send((submitted, file.to_owned()));
            submitted += 1;
        });
        drop(jobs);
        consume(fed, submitted, &mut done.iter())
    })
}

/// Files read by one thread before the next is worth starting: below this, one thread.
pub(super) const FILES_PER_THREAD: usize = 8;

/// The checked headers of the shards an index names, in file-name order.
pub(super) fn index_headers(
    index: &Path,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(&Header, usize),
) -> Result<Vec<Header>> {
    let text =
        std::fs::read(index).map_err(|e| bad(index, None, Problem::CannotRead(e.to_string())))?;
    let text = std::str::from_utf8(&text).map_err(|e| not_index(index, &e))?;
    let dir = index.parent().unwrap_or(Path::new(""));
    read_headers(
        threads.max(1),
        |submit| parse_index(text, &mut |file: &str| submit(&dir.join(file))),
        |parsed, _, arrivals| {
            let WeightMap {
                shards,
                mut entries,
            } = parsed.map_err(|e| not_index(index, &e))?;
            // Shards by file name, so errors and the order of equal names do not depend on
            // the order the index happens to list them in.
            let mut by_name: Vec<usize> = (0..shards.len()).collect();
            by_name.sort_unstable_by(|&a, &b| shards[a].cmp(&shards[b]));
            let mut place = vec![0; shards.len()];
            for (at, &id) in by_name.iter().enumerate() {
                place[id] = at;
            }
            let files: Vec<PathBuf> = by_name
                .iter()
                .map(|&id| dir.join(shards[id].as_ref()))
                .collect();
            for listed in &mut entries {
                listed.shard = place[listed.shard];
            }
            for (at, file) in files.iter().enumerate() {
                if !file.is_file() {
                    let tensor = entries
                        .iter()
                        .filter(|listed| listed.shard == at)
                        .map(|listed| listed.tensor.as_ref())
                        .min()
                        .unwrap_or("");
                    let problem = Problem::ShardMissing {
                        shard: shards[by_name[at]].to_string(),
                        path: file.display().to_string(),
                    };
                    return Err(bad(index, Some(tensor), problem));
                }
            }
            let hasher = RandomState::new();
            let table = IndexTable::new(index, entries, &hasher)?;
            Checks::new(&files, &hasher, Some(table)).run(&place, arrivals, progress, observe)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_give_results_by_submission_order() {
        let dir = std::env::temp_dir().join(format!("devicemap-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<PathBuf> = (0..20)
            .map(|i| {
                let path = dir.join(format!("{i}.safetensors"));
                let header = if i == 7 {
                    "[]".to_owned()
                } else {
                    format!(
                        r#"{{"t{i}":{{"dtype":"F32","shape":[{i}],"data_offsets":[0,{}]}}}}"#,
                        4 * i
                    )
                };
                let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
                bytes.extend_from_slice(header.as_bytes());
                bytes.resize(bytes.len() + 4 * i, 0);
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        for workers in [0, 1, 3] {
            let (fed, total, mut results) = read_headers(
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
