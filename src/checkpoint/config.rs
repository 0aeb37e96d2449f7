//! What `config.json` says about a checkpoint: today, which embeddings are tied.

use super::error::{bad, Problem};
use super::source::Checkpoint;
use crate::error::Result;

/// Names of input embeddings, by the last two components, in the models transformers ships.
const EMBEDDING_SUFFIXES: [&str; 5] = [
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
    "embed_in.weight",
];
/// The output head transformers ties to the input embeddings.
pub const HEAD: &str = "lm_head.weight";

/// The tied embedding pair of a checkpoint: when the `config.json` beside it says
/// `tie_word_embeddings` (transformers' default when the key is absent), the input embedding
/// and `lm_head.weight` share one tensor, which the checkpoint usually stores once. No
/// `config.json`, or no input embedding among `sizes`: no ties.
pub fn config_ties(checkpoint: &Checkpoint, sizes: &[(String, u64)]) -> Result<Vec<Vec<String>>> {
    let source = checkpoint.source();
    let name = checkpoint.config_name();
    let Ok(text) = source.read_whole(&name) else {
        return Ok(Vec::new());
    };
    let config_path = source.show(&name);
    let config: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| bad(&config_path, None, Problem::ConfigNotJson(e.to_string())))?;
    let tie = match config.get("tie_word_embeddings") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(
                &config_path,
                None,
                Problem::TieNotBool(other.to_string()),
            ))
        }
    };
    if !tie {
        return Ok(Vec::new());
    }
    let embedding = sizes.iter().map(|(n, _)| n).find(|n| {
        EMBEDDING_SUFFIXES
            .iter()
            .any(|s| n.as_str() == *s || n.ends_with(&format!(".{s}")))
    });
    Ok(embedding
        .filter(|n| n.as_str() != HEAD)
        .map(|n| vec![vec![n.clone(), HEAD.to_owned()]])
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::source::{Layout, LocalFiles};
    use crate::checkpoint::tests::Folder;

    #[test]
    fn tied_embeddings_from_config() {
        let folder = Folder::new("ties");
        let dir = folder.path();
        let files = Layout::Files(vec!["model.safetensors".to_owned()]);
        let checkpoint = Checkpoint::new(Box::new(LocalFiles::new(dir)), files).unwrap();
        let sizes = vec![
            ("model.embed_tokens.weight".to_owned(), 8),
            ("model.norm.weight".to_owned(), 2),
        ];
        assert!(
            config_ties(&checkpoint, &sizes).unwrap().is_empty(),
            "no config.json: no ties"
        );
        std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        assert_eq!(
            config_ties(&checkpoint, &sizes).unwrap(),
            vec![vec![
                "model.embed_tokens.weight".to_owned(),
                HEAD.to_owned()
            ]]
        );
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": false}"#).unwrap();
        assert!(config_ties(&checkpoint, &sizes).unwrap().is_empty());
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": "yes"}"#).unwrap();
        assert!(config_ties(&checkpoint, &sizes).is_err());
    }
}
