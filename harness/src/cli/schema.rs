//! `hsm-harness schema`: the JSON Schemas of the files the harness reads.

use std::io::Write;

use clap::{Args, ValueEnum};

use super::{EXIT_FAILED, EXIT_OK};

#[derive(Args)]
pub struct SchemaArgs {
    /// Which file format.
    #[arg(value_enum)]
    of: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Suite files (`suites/schema.json`), generated from the suite model.
    Suite,
    /// Backend files (`fixtures/backend.schema.json`).
    Backend,
    /// A signer protocol request line (`docs/signer-protocol/request.schema.json`).
    SignerRequest,
    /// A signer protocol response line (`docs/signer-protocol/response.schema.json`).
    SignerResponse,
}

/// Prints the schema, pretty, with a final newline: the committed files are this
/// output (`cargo run -p hsm-harness -- schema suite > suites/schema.json`).
pub fn main(args: SchemaArgs) -> i32 {
    let schema = match args.of {
        Format::Suite => crate::model::suite::schema(),
        Format::Backend => crate::model::backend::schema(),
        Format::SignerRequest => crate::signer_protocol::request_schema(),
        Format::SignerResponse => crate::signer_protocol::response_schema(),
    };
    let text = pretty(&schema);
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("hsm-harness schema: {e}");
            EXIT_FAILED
        }
    }
}

/// The text of a schema file.
pub fn pretty(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serialises");
    text.push('\n');
    text
}
