//! The checkpoint reader as a whole, on small real checkpoints: safetensors files written into
//! a temporary folder (data sections are holes) or held in memory by a test [`Source`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::error::Error;

/// A folder of its own under the system's temporary folder, removed when dropped.
pub(super) struct Folder(PathBuf);

impl Folder {
    pub(super) fn new(test: &str) -> Folder {
        let path = std::env::temp_dir().join(format!(
            "devicemap-checkpoint-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` as `name`, then `data` bytes more as a hole (read by no test).
    pub(super) fn write(&self, name: &str, (bytes, data): (Vec<u8>, u64)) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(bytes.len() as u64 + data).unwrap();
        path
    }

    fn index(&self, weight_map: &[(&str, &str)]) {
        self.index_text(&index_json(weight_map));
    }

    fn index_text(&self, text: &str) {
        std::fs::write(self.0.join(INDEX_FILE), text).unwrap();
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn index_json(weight_map: &[(&str, &str)]) -> String {
    let entries: Vec<String> = weight_map
        .iter()
        .map(|(tensor, file)| format!("{}: {}", json!(tensor), json!(file)))
        .collect();
    format!(
        r#"{{"metadata": {{}}, "weight_map": {{{}}}}}"#,
        entries.join(", ")
    )
}

fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "F32" => 4,
        "BF16" => 2,
        _ => 1,
    }
}

/// A safetensors file of `(name, dtype, elements)` tensors laid out one after another: its
/// length and header, and the length of its data section.
fn safetensors(tensors: &[(&str, &str, u64)]) -> (Vec<u8>, u64) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0;
    for &(name, dtype, elements) in tensors {
        let end = offset + elements * dtype_size(dtype);
        let entry = json!({"dtype": dtype, "shape": [elements], "data_offsets": [offset, end]});
        header.insert(name.into(), entry);
        offset = end;
    }
    raw(&serde_json::Value::Object(header).to_string(), offset)
}

/// A file whose header is `header` as given, and its data length.
pub(super) fn raw(header: &str, data: u64) -> (Vec<u8>, u64) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    (bytes, data)
}

/// One F32 tensor per name, of `elements` each.
fn f32s<'a>(names: &[&'a str], elements: u64) -> Vec<(&'a str, &'static str, u64)> {
    names.iter().map(|&name| (name, "F32", elements)).collect()
}

/// The sizes in model order, whether the order was known file by file, and the order the
/// observer was told file by file (empty once a file broke it).
type Read = (Vec<(String, u64)>, bool, Vec<String>);

fn read_with(checkpoint: &Checkpoint, threads: usize) -> Result<Read> {
    let mut streamed = Vec::new();
    let mut observe = |observed: Observed<'_>| {
        if let Some(order) = observed.order {
            let header = observed.header;
            streamed.extend(
                order
                    .iter()
                    .map(|&at| header.name(&header.tensors[at as usize]).to_owned()),
            );
        }
    };
    let sizes = checkpoint_sizes(checkpoint, None, threads, &mut |_, _| {}, &mut observe)?;
    Ok((sizes.to_vec(), sizes.followed_model(), streamed))
}

/// Reads with no, one and several reader threads, which must agree.
fn read(checkpoint: &Checkpoint) -> Result<Read> {
    let first = read_with(checkpoint, 0);
    for threads in [1, 4] {
        let again = read_with(checkpoint, threads);
        assert_eq!(
            format!("{again:?}"),
            format!("{first:?}"),
            "{threads} threads"
        );
    }
    first
}

fn local(path: &Path) -> Checkpoint {
    Checkpoint::local(path).unwrap()
}

fn names(sizes: &[(String, u64)]) -> Vec<&str> {
    sizes.iter().map(|(name, _)| name.as_str()).collect()
}

/// The file, tensor and problem of an error about one file, and its message.
fn problem<T: std::fmt::Debug>(result: Result<T>) -> (String, Option<String>, Problem, String) {
    match result {
        Err(Error::Checkpoint(error)) => {
            let message = error.to_string();
            match error {
                CheckpointError::File {
                    file,
                    tensor,
                    problem,
                } => (file, tensor, problem, message),
                other => panic!("not about one file: {other:?}"),
            }
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// Layers in the order safetensors writes names (by name: `layers.10` before `layers.2`).
const LAYERS: [&str; 3] = ["model.layers.0.w", "model.layers.10.w", "model.layers.2.w"];

#[test]
fn index_shards_are_read_in_model_order() {
    let folder = Folder::new("model-order");
    // The index lists the second shard first; each shard lists its names alphabetically.
    folder.write(
        "model-2.safetensors",
        safetensors(&[
            ("lm_head.weight", "F32", 8),
            ("model.layers.10.w", "BF16", 4),
            ("model.layers.2.w", "BF16", 4),
            ("model.norm.weight", "F32", 2),
        ]),
    );
    folder.write(
        "model-1.safetensors",
        safetensors(&[
            ("model.embed_tokens.weight", "F32", 8),
            ("model.layers.0.w", "I8", 4),
            ("model.layers.1.w", "I8", 4),
        ]),
    );
    folder.index(&[
        ("lm_head.weight", "model-2.safetensors"),
        ("model.layers.10.w", "model-2.safetensors"),
        ("model.layers.2.w", "model-2.safetensors"),
        ("model.norm.weight", "model-2.safetensors"),
        ("model.embed_tokens.weight", "model-1.safetensors"),
        ("model.layers.0.w", "model-1.safetensors"),
        ("model.layers.1.w", "model-1.safetensors"),
    ]);
    let (sizes, followed, streamed) = read(&local(folder.path())).unwrap();
    let expected = [
        ("model.embed_tokens.weight", 32),
        ("model.layers.0.w", 4),
        ("model.layers.1.w", 4),
        ("model.layers.2.w", 8),
        ("model.layers.10.w", 8),
        ("model.norm.weight", 8),
        ("lm_head.weight", 32),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|&(n, b)| (n.into(), b)).collect();
    assert_eq!(sizes, expected);
    // The shards, taken by file name, follow the model: the order was known file by file.
    assert!(followed);
    assert_eq!(streamed, names(&sizes));
    // The same from the index file, and from the list of shards.
    let from_index = local(&folder.path().join(INDEX_FILE));
    assert_eq!(read(&from_index).unwrap().0, expected);
    let shards = [
        folder.path().join("model-2.safetensors"),
        folder.path().join("model-1.safetensors"),
    ];
    let listed = Checkpoint::local_files(&shards).unwrap();
    let (sizes, followed, _) = read(&listed).unwrap();
    assert_eq!(sizes, expected);
    // Given in this order, the files do not follow the model: the order is made at the end.
    assert!(!followed);
}

#[test]
fn shards_that_do_not_follow_the_model_are_ordered_at_the_end() {
    let folder = Folder::new("not-following");
    folder.write("a.safetensors", safetensors(&f32s(&LAYERS[..2], 1)));
    let last = ["lm_head.weight", "model.embed_tokens.weight", LAYERS[2]];
    folder.write("b.safetensors", safetensors(&f32s(&last, 1)));
    let mut weight_map: Vec<(&str, &str)> =
        LAYERS[..2].iter().map(|&n| (n, "a.safetensors")).collect();
    weight_map.extend(last.iter().map(|&n| (n, "b.safetensors")));
    folder.index(&weight_map);
    let (sizes, followed, streamed) = read(&local(folder.path())).unwrap();
    assert_eq!(
        names(&sizes),
        [
            "model.embed_tokens.weight",
            "model.layers.0.w",
            "model.layers.2.w",
            "model.layers.10.w",
            "lm_head.weight"
        ]
    );
    assert!(!followed);
    // The first file followed; the second, holding the embeddings, broke the order.
    assert_eq!(streamed, ["model.layers.0.w", "model.layers.10.w"]);
}

#[test]
fn a_folder_names_its_checkpoint() {
    let folder = Folder::new("resolve");
    let err = |path: &Path| problem(Checkpoint::local(path).map(|_| ()));
    let (_, _, found, message) = err(&folder.path().join("nowhere"));
    assert_eq!(found, Problem::NotFound);
    assert!(
        message.ends_with("nowhere: no such file or directory"),
        "{message}"
    );
    let (file, _, found, _) = err(folder.path());
    let none = Problem::NoCheckpoint {
        indexes: 0,
        singles: 0,
    };
    assert_eq!(
        (file.as_str(), found),
        (&*folder.path().to_string_lossy(), none)
    );

    folder.write("x.safetensors", safetensors(&f32s(&["w"], 1)));
    let one = local(folder.path());
    assert_eq!(one.layout(), &Layout::Files(vec!["x.safetensors".into()]));
    folder.write("y.safetensors", safetensors(&f32s(&["v"], 1)));
    let (_, _, found, _) = err(folder.path());
    assert_eq!(
        found,
        Problem::NoCheckpoint {
            indexes: 0,
            singles: 2
        }
    );
    std::fs::write(folder.path().join("other.safetensors.index.json"), "{}").unwrap();
    let other = Layout::Index("other.safetensors.index.json".into());
    assert_eq!(local(folder.path()).layout(), &other);
    // `model.safetensors` comes before any other index, `model.safetensors.index.json` first.
    folder.write(SINGLE_FILE, safetensors(&f32s(&["u"], 1)));
    assert_eq!(
        local(folder.path()).layout(),
        &Layout::Files(vec![SINGLE_FILE.into()])
    );
    folder.index(&[("w", "x.safetensors")]);
    assert_eq!(
        local(folder.path()).layout(),
        &Layout::Index(INDEX_FILE.into())
    );
    let (sizes, _, _) = read(&local(folder.path())).unwrap();
    assert_eq!(sizes, [("w".to_owned(), 4)]);

    let empty = Checkpoint::local_files(&[]).map(|_| ());
    assert_eq!(
        empty.unwrap_err().to_string(),
        "The list of checkpoint files is empty"
    );
}

#[test]
fn config_is_read_beside_the_checkpoint() {
    let folder = Folder::new("config");
    let shard = folder.write("sub/x.safetensors", safetensors(&f32s(&["w"], 1)));
    std::fs::write(folder.path().join("sub/config.json"), "{}").unwrap();
    let checkpoint = Checkpoint::local_files(&[shard]).unwrap();
    let sizes = [("model.embed_tokens.weight".to_owned(), 4)];
    assert_eq!(config_ties(&checkpoint, &sizes).unwrap().len(), 1);
    std::fs::write(folder.path().join("sub/config.json"), "{").unwrap();
    let (file, _, found, _) = problem(config_ties(&checkpoint, &sizes));
    assert!(file.ends_with("sub/config.json"), "{file}");
    assert!(matches!(found, Problem::ConfigNotJson(_)));
}

/// A checkpoint of two shards, `w` and `v` in the first, `u` in the second, and its index;
/// `index` changes the index's entries.
fn two_shards(folder: &Folder, index: &[(&str, &str)]) -> Result<Read> {
    folder.write("s1.safetensors", safetensors(&f32s(&["w", "v"], 1)));
    folder.write("s2.safetensors", safetensors(&f32s(&["u"], 1)));
    folder.index(index);
    read(&local(folder.path()))
}

#[test]
fn index_errors() {
    let folder = Folder::new("index-errors");
    let good = [
        ("w", "s1.safetensors"),
        ("v", "s1.safetensors"),
        ("u", "s2.safetensors"),
    ];
    assert_eq!(two_shards(&folder, &good).unwrap().0.len(), 3);
    // A tensor the index does not list is allowed.
    let unlisted = [good[0], good[2]];
    assert_eq!(two_shards(&folder, &unlisted).unwrap().0.len(), 3);

    let index_file = folder
        .path()
        .join(INDEX_FILE)
        .to_string_lossy()
        .into_owned();
    // The index's entries, the tensor the error names, and the problem.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Problem);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("w", "s1.safetensors"),
                ("v", "s2.safetensors"),
                ("u", "s2.safetensors"),
            ],
            "v",
            Problem::WrongShard {
                named: "s2.safetensors".into(),
                found: folder
                    .path()
                    .join("s1.safetensors")
                    .to_string_lossy()
                    .into(),
            },
        ),
        (
            vec![
                ("w", "s1.safetensors"),
                ("t", "s2.safetensors"),
                ("u", "s2.safetensors"),
            ],
            "t",
            Problem::NotInShard {
                named: "s2.safetensors".into(),
            },
        ),
        (
            vec![
                ("w", "s1.safetensors"),
                ("z", "s3.safetensors"),
                ("y", "s3.safetensors"),
            ],
            "y",
            Problem::ShardMissing {
                shard: "s3.safetensors".into(),
                path: folder
                    .path()
                    .join("s3.safetensors")
                    .to_string_lossy()
                    .into(),
            },
        ),
        (
            vec![
                ("w", "s1.safetensors"),
                ("u", "s2.safetensors"),
                ("w", "s1.safetensors"),
            ],
            "w",
            Problem::ListedTwice,
        ),
    ];
    for (index, tensor, expected) in cases {
        let (file, named, found, message) = problem(two_shards(&folder, &index));
        assert_eq!(
            (file.as_str(), named.as_deref(), &found),
            (index_file.as_str(), Some(tensor), &expected)
        );
        assert!(
            message.starts_with(&format!("{index_file}: tensor '{tensor}': ")),
            "{message}"
        );
    }

    // A shard that is a folder cannot be read (and is not called missing).
    std::fs::create_dir(folder.path().join("s3.safetensors")).unwrap();
    let index = [("w", "s1.safetensors"), ("z", "s3.safetensors")];
    let (_, tensor, found, _) = problem(two_shards(&folder, &index));
    assert_eq!(tensor.as_deref(), Some("z"));
    assert!(
        matches!(found, Problem::ShardUnreadable { .. }),
        "{found:?}"
    );
    // The unreadable shard is found before the index's repeated name.
    let index = [("w", "s3.safetensors"), ("w", "s1.safetensors")];
    assert!(matches!(
        problem(two_shards(&folder, &index)).2,
        Problem::ShardUnreadable { .. }
    ));

    for text in [
        "[]",
        "{\"metadata\": {}}",
        "{\"weight_map\": {\"w\": 1}}",
        "\u{ff}",
    ] {
        folder.index_text(text);
        let (file, _, found, message) = problem(read(&local(folder.path())));
        assert_eq!(file, index_file);
        assert!(matches!(found, Problem::NotIndex(_)), "{text}: {found:?}");
        assert!(message.contains("not a safetensors index"), "{message}");
    }
    std::fs::write(folder.path().join(INDEX_FILE), [0xff, 0xfe]).unwrap();
    assert!(matches!(
        problem(read(&local(folder.path()))).2,
        Problem::NotIndex(_)
    ));
    folder.index(&[]);
    let error = read(&local(folder.path())).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("The checkpoint '{index_file}' holds no tensors")
    );
}

#[test]
fn names_twice() {
    let folder = Folder::new("names-twice");
    let a = folder.write("a.safetensors", safetensors(&f32s(&["w", "v"], 1)));
    let b = folder.write("b.safetensors", safetensors(&f32s(&["u", "v"], 1)));
    let (file, tensor, found, _) = problem(read(
        &Checkpoint::local_files(&[a.clone(), b.clone()]).unwrap(),
    ));
    assert_eq!(
        (file, tensor.as_deref()),
        (b.to_string_lossy().into_owned(), Some("v"))
    );
    assert_eq!(
        found,
        Problem::AlsoIn {
            first: a.to_string_lossy().into()
        }
    );

    let entry = r#"{"dtype": "F32", "shape": [1], "data_offsets": "#;
    let twice = format!(r#"{{"w": {entry}[0, 4]}}, "w": {entry}[4, 8]}}}}"#);
    let c = folder.write("c.safetensors", raw(&twice, 8));
    let (_, tensor, found, message) = problem(read(&Checkpoint::local_files(&[c]).unwrap()));
    assert_eq!(
        (tensor.as_deref(), found),
        (Some("w"), Problem::TwiceInHeader)
    );
    assert!(
        message.ends_with("c.safetensors: tensor 'w': duplicate tensor name (twice in its header)"),
        "{message}"
    );

    // With an index, a listed name in two shards.
    folder.index(&[
        ("w", "a.safetensors"),
        ("v", "a.safetensors"),
        ("u", "b.safetensors"),
    ]);
    let (_, tensor, found, _) = problem(read(&local(folder.path())));
    assert_eq!(tensor.as_deref(), Some("v"));
    assert!(matches!(found, Problem::AlsoIn { .. }), "{found:?}");
}

#[test]
fn entries_that_leave_the_checkpoint_are_refused() {
    let folder = Folder::new("outside");
    let inside = Folder::new("outside/checkpoint");
    // A real shard outside the checkpoint: reading it would succeed.
    folder.write("x.safetensors", safetensors(&f32s(&["v"], 1)));
    inside.write("a.safetensors", safetensors(&f32s(&["w"], 1)));
    let outside = folder
        .path()
        .join("x.safetensors")
        .to_string_lossy()
        .into_owned();
    for entry in [
        "../x.safetensors",
        "sub/../../x.safetensors",
        outside.as_str(),
    ] {
        inside.index(&[("w", "a.safetensors"), ("v", entry)]);
        let (file, tensor, found, message) = problem(read(&local(inside.path())));
        assert!(file.ends_with(INDEX_FILE), "{file}");
        assert_eq!(tensor, None);
        assert_eq!(
            found,
            Problem::ShardOutside {
                shard: entry.into()
            }
        );
        let shown = crate::error::quoted(entry);
        assert!(
            message.ends_with(&format!(
                "the index names shard {shown}, a path outside the checkpoint's folder"
            )),
            "{message}"
        );
    }
    // A shard in a folder inside the checkpoint is fine.
    inside.write("sub/b.safetensors", safetensors(&f32s(&["v"], 1)));
    inside.index(&[("w", "a.safetensors"), ("v", "sub/./b.safetensors")]);
    assert_eq!(read(&local(inside.path())).unwrap().0.len(), 2);
}

#[test]
fn file_errors_name_the_file() {
    let folder = Folder::new("file-errors");
    let tensor = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"w": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": {offsets}}}}}"#)
    };
    let overlap = r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "v": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}"#;
    let cases: Vec<((Vec<u8>, u64), Problem)> = vec![
        ((vec![5, 0], 0), Problem::TooShort { len: 2 }),
        (
            (1000u64.to_le_bytes().to_vec(), 10),
            Problem::HeaderPastEnd {
                len: 1000,
                file_len: 18,
            },
        ),
        (
            ((MAX_HEADER_SIZE + 1).to_le_bytes().to_vec(), 0),
            Problem::HeaderLengthTooLarge {
                len: MAX_HEADER_SIZE + 1,
            },
        ),
        (raw("{not json", 0), Problem::HeaderNotJson(String::new())),
        (raw("[1, 2]", 0), Problem::HeaderNotJson(String::new())),
        (
            (vec![2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe], 0),
            Problem::HeaderNotUtf8(String::new()),
        ),
        (
            raw(&tensor("F9", "[1]", "[0, 1]"), 1),
            Problem::UnknownDtype("F9".into()),
        ),
        (
            raw(&tensor("F32", "[1]", "[4, 0]"), 4),
            Problem::OffsetsReversed { begin: 4, end: 0 },
        ),
        (
            raw(&tensor("F32", "[1]", "[0, 4]"), 2),
            Problem::OffsetsPastEnd {
                begin: 0,
                end: 4,
                data_len: 2,
            },
        ),
        (
            raw(&tensor("F32", "[2]", "[0, 4]"), 4),
            Problem::WrongSpan {
                begin: 0,
                end: 4,
                shape: "[2]".into(),
                dtype: Dtype::F32,
                bytes: 8,
            },
        ),
        (
            raw(&tensor("F32", "[4294967296, 4294967296, 4]", "[0, 4]"), 4),
            Problem::ShapeOverflows {
                shape: "[4294967296, 4294967296, 4]".into(),
            },
        ),
        (
            raw(overlap, 8),
            Problem::Overlap {
                begin: 2,
                end: 6,
                other: "w".into(),
            },
        ),
    ];
    for (at, (bytes, expected)) in cases.into_iter().enumerate() {
        let path = folder.write(&format!("{at}.safetensors"), bytes);
        let (file, _, found, message) = problem(read(
            &Checkpoint::local_files(std::slice::from_ref(&path)).unwrap(),
        ));
        assert_eq!(file, path.to_string_lossy(), "{message}");
        match (&found, &expected) {
            // serde's and std's words, not checked here.
            (Problem::HeaderNotJson(_), Problem::HeaderNotJson(_))
            | (Problem::HeaderNotUtf8(_), Problem::HeaderNotUtf8(_)) => {}
            _ => assert_eq!(found, expected, "{message}"),
        }
    }
    let missing = folder.path().join("missing.safetensors");
    let (_, _, found, _) = problem(read(&Checkpoint::local_files(&[missing]).unwrap()));
    assert!(matches!(found, Problem::CannotRead(_)), "{found:?}");
    let message = problem(read(
        &Checkpoint::local_files(&[folder.path().to_owned()]).unwrap(),
    ))
    .3;
    assert!(message.contains("cannot read: "), "{message}");
}

#[test]
fn the_first_error_in_file_order_wins_whatever_the_threads_do() {
    let folder = Folder::new("first-error");
    let mut weight_map = Vec::new();
    let names: Vec<String> = (0..24).map(|i| format!("model.layers.{i}.w")).collect();
    for (i, name) in names.iter().enumerate() {
        let file = format!("model-{i:02}.safetensors");
        folder.write(&file, safetensors(&f32s(&[name], 1)));
        weight_map.push((name.as_str(), file));
    }
    let entries: Vec<(&str, &str)> = weight_map.iter().map(|(n, f)| (*n, f.as_str())).collect();
    folder.index(&entries);
    // Broken: a header of shard 5, and shard 17's tensor is in the wrong shard per the index.
    folder.write("model-05.safetensors", raw("[]", 0));
    let mut wrong = entries.clone();
    wrong[17].1 = "model-18.safetensors";
    folder.index(&wrong);
    for _ in 0..10 {
        let (file, _, found, _) = problem(read(&local(folder.path())));
        assert!(file.ends_with("model-05.safetensors"), "{file}");
        assert!(matches!(found, Problem::HeaderNotJson(_)), "{found:?}");
    }
    // Listing a tensor twice is found before any shard is looked at.
    wrong.push(entries[0]);
    folder.index(&wrong);
    assert_eq!(problem(read(&local(folder.path()))).2, Problem::ListedTwice);
}

/// A checkpoint held in memory, which records every name the reader asks for.
#[derive(Default)]
struct Memory {
    files: HashMap<String, Vec<u8>>,
    asked: Arc<Mutex<Vec<String>>>,
    /// Bytes `len` adds to each file's length, as if the file shrank after it was measured.
    shrunk: u64,
}

impl Memory {
    fn add(&mut self, name: &str, (mut bytes, data): (Vec<u8>, u64)) {
        bytes.resize(bytes.len() + data as usize, 0);
        self.files.insert(name.to_owned(), bytes);
    }

    fn get(&self, name: &str) -> io::Result<&Vec<u8>> {
        self.asked.lock().unwrap().push(name.to_owned());
        self.files
            .get(name)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

impl Source for Memory {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .keys()
            .filter(|n| !n.contains('/'))
            .cloned()
            .collect())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(self.get(name)?.len() as u64 + self.shrunk)
    }

    fn read_range(&self, name: &str, start: u64, len: u64, buffer: &mut Vec<u8>) -> io::Result<()> {
        let bytes = self.get(name)?;
        let start = (start as usize).min(bytes.len());
        let end = start.saturating_add(len as usize).min(bytes.len());
        buffer.extend_from_slice(&bytes[start..end]);
        Ok(())
    }

    fn read_whole(&self, name: &str) -> io::Result<Vec<u8>> {
        self.get(name).cloned()
    }

    fn show(&self, name: &str) -> String {
        format!("memory://{name}")
    }
}

#[test]
fn the_reader_reads_only_through_its_source() {
    let mut memory = Memory::default();
    memory.add(
        "shards/b.safetensors",
        safetensors(&f32s(&["lm_head.weight"], 2)),
    );
    memory.add(
        "shards/a.safetensors",
        safetensors(&f32s(&["model.embed_tokens.weight"], 2)),
    );
    let index = index_json(&[
        ("lm_head.weight", "shards/b.safetensors"),
        ("model.embed_tokens.weight", "shards/a.safetensors"),
    ]);
    memory.add(INDEX_FILE, (index.into_bytes(), 0));
    memory.add(
        CONFIG_FILE,
        (br#"{"tie_word_embeddings": true}"#.to_vec(), 0),
    );
    let checkpoint = Checkpoint::find(Box::new(memory)).unwrap();
    let (sizes, followed, _) = read(&checkpoint).unwrap();
    assert_eq!(
        names(&sizes),
        ["model.embed_tokens.weight", "lm_head.weight"]
    );
    assert!(followed);
    let ties = config_ties(&checkpoint, &sizes).unwrap();
    assert_eq!(ties, [["model.embed_tokens.weight", HEAD]]);

    // Errors name files as the source shows them; a refused entry is never asked for.
    let mut memory = Memory::default();
    memory.add("a.safetensors", raw("{", 0));
    memory.add("up.safetensors", safetensors(&f32s(&["v"], 1)));
    let index = index_json(&[("w", "a.safetensors"), ("v", "../up.safetensors")]);
    memory.add(INDEX_FILE, (index.into_bytes(), 0));
    let asked = Arc::clone(&memory.asked);
    let checkpoint = Checkpoint::find(Box::new(memory)).unwrap();
    let (file, _, found, _) = problem(read_with(&checkpoint, 0));
    assert_eq!(file, format!("memory://{INDEX_FILE}"));
    assert!(matches!(found, Problem::ShardOutside { .. }));
    let asked = asked.lock().unwrap();
    assert!(asked.iter().all(|name| !name.contains("up.")), "{asked:?}");
    let files = Layout::Files(vec!["a.safetensors".into()]);
    let mut memory = Memory::default();
    memory.add("a.safetensors", raw("{", 0));
    let checkpoint = Checkpoint::new(Box::new(memory), files.clone()).unwrap();
    assert_eq!(
        problem(read_with(&checkpoint, 0)).0,
        "memory://a.safetensors"
    );

    // A file that ends before its header does (it shrank after it was measured).
    let mut memory = Memory {
        shrunk: 10,
        ..Memory::default()
    };
    let mut cut = 12u64.to_le_bytes().to_vec();
    cut.extend_from_slice(b"{}");
    memory.add("a.safetensors", (cut, 0));
    let checkpoint = Checkpoint::new(Box::new(memory), files).unwrap();
    let (_, _, found, _) = problem(read_with(&checkpoint, 0));
    assert_eq!(found, Problem::HeaderCut { read: 2, len: 12 });
}

#[test]
fn other_formats_are_named_but_never_a_safetensors_file() {
    let folder = Folder::new("formats");
    // A header of 640 bytes starts 0x80 0x02, as a pickle does: it is still read.
    let header = r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    let header = format!("{header:<640}");
    let path = folder.write("pickle-like.safetensors", raw(&header, 4));
    assert_eq!(&std::fs::read(&path).unwrap()[..2], &[0x80, 0x02]);
    assert_eq!(read(&local(&path)).unwrap().0, vec![("w".to_owned(), 4)]);
    // A pickle and a zip archive are named by their format.
    let pickle = folder.write(
        "legacy.bin",
        (vec![0x80, 0x02, 0x8a, 0x0a, 1, 2, 3, 4, 5, 6], 0),
    );
    assert_eq!(problem(read(&local(&pickle))).2, Problem::Pickle);
    let zip = folder.write("archive.bin", (b"PK\x03\x04\x14\x00\x00\x00".to_vec(), 100));
    assert_eq!(problem(read(&local(&zip))).2, Problem::TorchZip);
    // JSON text (a config.json given as the checkpoint) is named as JSON, not as a header
    // length of 10^18 bytes.
    let config = b"{\n  \"architectures\": [\"LlamaForCausalLM\"]\n}\n".to_vec();
    let config = folder.write("config.json", (config, 0));
    assert_eq!(problem(read(&local(&config))).2, Problem::Json);
    // A folder of PyTorch files is named as one.
    let torch = Folder::new("formats-folder");
    torch.write(PYTORCH_FILE, (b"PK\x03\x04\x14\x00\x00\x00".to_vec(), 100));
    let found = problem(Checkpoint::local(torch.path()).map(|_| ())).2;
    let file = PYTORCH_FILE.to_owned();
    assert_eq!(found, Problem::PytorchFolder { file });
    let files = pytorch_checkpoint(torch.path()).unwrap().unwrap();
    assert!(matches!(files.layout(), Layout::Files(names) if names == &[PYTORCH_FILE]));
    assert!(pytorch_checkpoint(&path).unwrap().is_none());
}
