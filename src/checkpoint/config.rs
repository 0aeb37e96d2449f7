//! What `config.json` says about a checkpoint: which embeddings are tied, when the model
//! cannot be built (see `loaded.rs` for the names and ties of the model transformers builds).

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

/// The `model_type`s whose config class ties the word embeddings when `config.json` omits
/// `tie_word_embeddings` (transformers 5.24; every other class defaults to untied). Sorted;
/// `tests/test_loaded_names.py` instantiates every config class and compares.
pub const TIED_BY_DEFAULT: &[&str] = &[
    "albert",
    "aya_vision",
    "bart",
    "bert",
    "bert-generation",
    "big_bird",
    "bigbird_pegasus",
    "biogpt",
    "blenderbot",
    "blenderbot-small",
    "blip",
    "blip_text_model",
    "bloom",
    "camembert",
    "canary",
    "cohere",
    "cohere2",
    "cohere2_moe",
    "cohere2_vision",
    "cohere_compass_text",
    "convbert",
    "cpmant",
    "csm",
    "ctrl",
    "d_fine",
    "dab-detr",
    "data2vec-text",
    "deberta",
    "deberta-v2",
    "deepseek_vl",
    "deepseek_vl_hybrid",
    "deformable_detr",
    "deimv2",
    "diffusion_gemma",
    "diffusion_gemma_text",
    "distilbert",
    "electra",
    "ernie",
    "ernie4_5",
    "ernie4_5_moe",
    "ernie4_5_vl_moe",
    "ernie4_5_vl_moe_text",
    "esm",
    "falcon",
    "falcon_mamba",
    "flaubert",
    "flava",
    "florence2",
    "fnet",
    "fun_asr_nano",
    "funnel",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "gemma3n",
    "gemma3n_text",
    "gemma4",
    "gemma4_text",
    "gemma4_unified",
    "gemma4_unified_assistant",
    "gemma4_unified_text",
    "glmasr",
    "got_ocr2",
    "gpt-sw3",
    "gpt2",
    "gpt_bigcode",
    "gpt_neo",
    "gpt_neox_japanese",
    "granite_docling",
    "granite_docling_text",
    "granite_speech",
    "granite_speech5_ctc",
    "granite_speech_plus",
    "granite_swa",
    "grounding-dino",
    "gte",
    "hunyuan_vl",
    "hunyuan_vl_text",
    "hyperclovax_vision_v2",
    "ibert",
    "internvl",
    "janus",
    "jetmoe",
    "jina_embeddings_v3",
    "kimi_k25",
    "kosmos-2",
    "kosmos-2.5",
    "kosmos_2_5_text_model",
    "kosmos_2_text_model",
    "lara_mini",
    "layoutlm",
    "led",
    "lfm2",
    "lfm2_moe",
    "lfm2_vl",
    "lfm3",
    "lfm3_vl",
    "lighton_ocr",
    "longformer",
    "longt5",
    "luke",
    "lxmert",
    "m2m_100",
    "mamba",
    "marian",
    "mbart",
    "megatron-bert",
    "mimi",
    "mimi_decoder",
    "mimi_encoder",
    "minicpm3",
    "minicpm_ocr",
    "mistral3",
    "mm-grounding-dino",
    "mobilebert",
    "modernbert",
    "modernbert-decoder",
    "moonshine",
    "moss_transcribe_diarize",
    "mpnet",
    "mpt",
    "mra",
    "mt5",
    "mvp",
    "neomme",
    "nllb-moe",
    "nomic_bert",
    "nystromformer",
    "openai-gpt",
    "opt",
    "ovis2",
    "paddleocr_vl",
    "paddleocr_vl_text",
    "paligemma",
    "pe_audio_video",
    "pegasus",
    "pegasus_x",
    "plbart",
    "pop2piano",
    "pp_chart2table",
    "pp_doclayout_v3",
    "pp_doclayout_v4",
    "prophetnet",
    "qwen2_5_omni_text",
    "qwen3_asr",
    "qwen3_vl_moe_text",
    "recurrent_gemma",
    "roberta",
    "roberta-prelayernorm",
    "roc_bert",
    "roformer",
    "rt_detr_v2",
    "sam",
    "sam_hq",
    "seamless_m4t",
    "seamless_m4t_v2",
    "shieldgemma2",
    "smollm3",
    "speech_to_text",
    "speecht5",
    "squeezebert",
    "starcoder2",
    "switch_transformers",
    "t5",
    "t5_gemma_module",
    "t5gemma",
    "t5gemma2",
    "t5gemma2_decoder",
    "t5gemma2_encoder",
    "t5gemma2_text",
    "tapas",
    "trocr",
    "udop",
    "umt5",
    "vaultgemma",
    "vilt",
    "visual_bert",
    "voxtral_realtime",
    "whisper",
    "xglm",
    "xlm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xlnet",
    "xmod",
    "yoso",
    "youtu",
    "zamba",
    "zamba2",
    "zaya",
];

/// Whether a config (or its `text_config`) says the word embeddings are tied, as
/// transformers' config classes read it: the flag if given, else the class default of its
/// `model_type` ([`TIED_BY_DEFAULT`]); a `text_config` that ties them ties them too (LLaVA's
/// and Qwen2-VL's configs carry a flag saved there forward). `None`: the config names no
/// `model_type` and gives no flag.
fn says_tied(config: &serde_json::Value, path: &str) -> Result<Option<bool>> {
    let flag = match config.get("tie_word_embeddings") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(other) => return Err(bad(path, None, Problem::TieNotBool(other.to_string()))),
    };
    let by_type = config
        .get("model_type")
        .and_then(|t| t.as_str())
        .map(|t| TIED_BY_DEFAULT.binary_search(&t).is_ok());
    let own = flag.or(by_type);
    if own == Some(true) {
        return Ok(own);
    }
    let text = match config.get("text_config") {
        Some(text) if text.is_object() => says_tied(text, path)?,
        _ => None,
    };
    Ok(match (own, text) {
        (_, Some(true)) => Some(true),
        (Some(own), _) => Some(own),
        (None, text) => text,
    })
}

/// The head a checkpoint ties to its input embedding: `lm_head.weight`, or the checkpoint's
/// `*.lm_head.weight` (`language_model.lm_head.weight` in older vision-language saves).
fn head_of(sizes: &[(String, u64)]) -> Option<&str> {
    sizes
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| *n == HEAD || n.ends_with(&format!(".{HEAD}")))
}

/// [`ties_of_config`] reading the `config.json` itself.
#[cfg(test)]
pub fn config_ties(checkpoint: &Checkpoint, sizes: &[(String, u64)]) -> Result<Vec<Vec<String>>> {
    ties_of_config(checkpoint, config_text(checkpoint).as_deref(), sizes)
}

/// The bytes of the `config.json` beside `checkpoint` ([`Checkpoint::config_name`]), or
/// `None` when it cannot be read: read once, for [`ties_of_config`] and the caller's own use.
pub fn config_text(checkpoint: &Checkpoint) -> Option<Vec<u8>> {
    checkpoint
        .source()
        .read_whole(&checkpoint.config_name())
        .ok()
}

/// The tied embedding pair of a checkpoint, for planning in the checkpoint's own names (where
/// transformers cannot build the model): when the `config.json` beside it says the embeddings
/// are tied ([`says_tied`]), the input embedding and the head share one tensor, which the
/// checkpoint usually stores once. A config with neither flag nor `model_type` ties them when
/// the checkpoint stores an input embedding and no head, which is what `save_pretrained`
/// leaves of a tied pair. No `config.json`, or no input embedding among `sizes`: no ties.
/// `text`: the `config.json` as read ([`config_text`]; `None`: there is none).
pub fn ties_of_config(
    checkpoint: &Checkpoint,
    text: Option<&[u8]>,
    sizes: &[(String, u64)],
) -> Result<Vec<Vec<String>>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let config_path = checkpoint.source().show(&checkpoint.config_name());
    let config: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| bad(&config_path, None, Problem::ConfigNotJson(e.to_string())))?;
    let head = head_of(sizes);
    let tie = says_tied(&config, &config_path)?.unwrap_or(head.is_none());
    if !tie {
        return Ok(Vec::new());
    }
    let embedding = sizes.iter().map(|(n, _)| n).find(|n| {
        EMBEDDING_SUFFIXES
            .iter()
            .any(|s| n.as_str() == *s || n.ends_with(&format!(".{s}")))
    });
    let head = head.unwrap_or(HEAD);
    Ok(embedding
        .filter(|n| n.as_str() != head)
        .map(|n| vec![vec![n.clone(), head.to_owned()]])
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::source::{Layout, LocalFiles};
    use crate::checkpoint::tests::Folder;

    #[test]
    fn table_is_sorted() {
        assert!(TIED_BY_DEFAULT.windows(2).all(|w| w[0] < w[1]));
    }

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
        // Llama's class defaults to untied, Gemma's to tied; LLaVA's config takes its text
        // config's flag; a config without model_type ties when no head is stored.
        let tied = vec![vec![
            "model.embed_tokens.weight".to_owned(),
            HEAD.to_owned(),
        ]];
        for (config, expected) in [
            (r#"{"model_type": "llama"}"#, false),
            (r#"{"model_type": "gemma"}"#, true),
            (
                r#"{"model_type": "llama", "tie_word_embeddings": true}"#,
                true,
            ),
            (
                r#"{"model_type": "gemma", "tie_word_embeddings": false}"#,
                false,
            ),
            (
                r#"{"model_type": "llava", "text_config": {"model_type": "gemma"}}"#,
                true,
            ),
            (
                r#"{"model_type": "llava", "text_config": {"tie_word_embeddings": true}}"#,
                true,
            ),
            (
                r#"{"model_type": "llava", "text_config": {"model_type": "llama"}}"#,
                false,
            ),
            ("{}", true),
        ] {
            std::fs::write(dir.join("config.json"), config).unwrap();
            let found = config_ties(&checkpoint, &sizes).unwrap();
            assert_eq!(
                found,
                if expected { tied.clone() } else { vec![] },
                "{config}"
            );
        }
        let with_head = [sizes.clone(), vec![(HEAD.to_owned(), 8)]].concat();
        assert!(config_ties(&checkpoint, &with_head).unwrap().is_empty());
        let old_vlm = vec![
            ("language_model.model.embed_tokens.weight".to_owned(), 8),
            ("language_model.lm_head.weight".to_owned(), 8),
        ];
        std::fs::write(dir.join("config.json"), r#"{"model_type": "gemma3"}"#).unwrap();
        assert_eq!(
            config_ties(&checkpoint, &old_vlm).unwrap(),
            [[
                "language_model.model.embed_tokens.weight",
                "language_model.lm_head.weight"
            ]]
        );
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": false}"#).unwrap();
        assert!(config_ties(&checkpoint, &sizes).unwrap().is_empty());
        std::fs::write(dir.join("config.json"), r#"{"tie_word_embeddings": "yes"}"#).unwrap();
        assert!(config_ties(&checkpoint, &sizes).is_err());
    }
}
