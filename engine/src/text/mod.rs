//! The text layer: turning a prompt into token ids and generated ids back into text.
//!
//! [`Tokenizer`] reads the vocabulary straight from a GGUF file (or a Hugging Face
//! `tokenizer.json`) and produces the same ids llama.cpp does; [`StreamDecoder`] turns ids
//! into text one token at a time without ever splitting a character; [`ChatTemplate`] renders
//! a conversation into the prompt format the model was trained on, with the Jinja template
//! the model ships.

pub mod conv_template;
pub mod template;
pub mod tokenizer;

pub use conv_template::ConvTemplate;
pub use template::{ChatTemplate, Message, RenderLimits, ToolCall, CHATML_TEMPLATE};
pub use tokenizer::{StreamDecoder, Tokenizer, SUPPORTED_PRE_TOKENIZERS};

#[cfg(test)]
mod tests;
