//! Model files: reading weights, hyperparameters and tokenizer data from the formats
//! models ship in.

pub mod config;
pub mod gguf;
pub mod llama;
