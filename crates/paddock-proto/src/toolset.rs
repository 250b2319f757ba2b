//! The inputs of the agent toolset (`RunToolRequest.input_json`), defined
//! once: the guest deserializes calls into these types, and front ends that
//! must describe the tools (the MCP server's `tools/list`) derive their JSON
//! Schemas from the same types, so the two can never disagree. Field names,
//! optionality and meanings are those of the `anthropic` SDK's
//! `BetaManagedAgentsAgentToolset20260401*Input` models.

use schemars::JsonSchema;
use serde::Deserialize;

/// Run a command in the session's persistent bash shell: its working
/// directory, variables and background jobs carry over between calls. The
/// output (stdout and stderr together, at most 100 KiB, the tail kept) is
/// returned; a non-zero exit status is an error result.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct BashInput {
    /// Shell command to execute. Omit only when `restart` is true.
    pub command: Option<String>,
    /// When true, restart the persistent bash session instead of running a
    /// command; later calls run in the fresh shell.
    pub restart: Option<bool>,
    /// Per-call timeout in milliseconds (default 120000 when omitted or zero).
    /// On timeout the shell is killed and must be restarted.
    pub timeout_ms: Option<u64>,
}

/// Read a file: its text (at most 256 KiB, or the lines of `view_range`),
/// images as image blocks, PDFs as documents. Paths are absolute in the sandbox or relative
/// to the session's working directory.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadInput {
    /// Path of the file to read.
    pub file_path: String,
    /// Optional `[start_line, end_line]`, 1-indexed and inclusive. When
    /// omitted the whole file is returned; an `end_line` of 0 or below means
    /// "to the end of the file".
    pub view_range: Option<Vec<i64>>,
}

/// Write a file, replacing all of its contents; missing parent directories
/// are made.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteInput {
    /// Path of the file to write.
    pub file_path: String,
    /// Full file contents to write.
    pub content: String,
}

/// Replace a string in a file. By default `old_string` must occur exactly
/// once.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditInput {
    /// Path of the file to edit.
    pub file_path: String,
    /// Substring to find and replace.
    pub old_string: String,
    /// Replacement text.
    pub new_string: String,
    /// When true, replace every occurrence of `old_string` instead of
    /// requiring a unique match.
    pub replace_all: Option<bool>,
}

/// Find paths matching a doublestar glob pattern, newest first (at most 200).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GlobInput {
    /// Doublestar glob pattern, e.g. `**/*.rs`.
    pub pattern: String,
    /// Optional directory to search under; default the working directory.
    pub path: Option<String>,
}

/// Search file contents for a regular expression; returns matching lines as
/// `path:line:text`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GrepInput {
    /// Regular expression to search for.
    pub pattern: String,
    /// Optional directory (or file) to search under; default the working
    /// directory.
    pub path: Option<String>,
}

/// One tool of the toolset as a client describes it to a model.
pub struct ToolSpec {
    pub name: &'static str,
    /// The input type's doc comment.
    pub description: String,
    /// JSON Schema of the input (an object schema).
    pub input_schema: serde_json::Map<String, serde_json::Value>,
}

/// A tool's spec from its input type: the type's doc comment is the tool's
/// description. Public for front ends that add tools of their own (MCP's
/// exec and run_code), so every schema is made the same way.
pub fn spec<T: JsonSchema>(name: &'static str) -> ToolSpec {
    let mut schema =
        schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>();
    let mut object = schema.as_object_mut().cloned().unwrap_or_default();
    // The description goes with the tool; the schema keeps the fields' own.
    let description =
        object.remove("description").and_then(|d| d.as_str().map(String::from)).unwrap_or_default();
    object.remove("title");
    object.remove("$schema");
    ToolSpec { name, description, input_schema: object }
}

/// The six tools of `agent_toolset_20260401`, in the reference's order.
pub fn tools() -> Vec<ToolSpec> {
    vec![
        spec::<BashInput>("bash"),
        spec::<ReadInput>("read"),
        spec::<WriteInput>("write"),
        spec::<EditInput>("edit"),
        spec::<GlobInput>("glob"),
        spec::<GrepInput>("grep"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_the_fields_the_guest_reads() {
        let tools = tools();
        let names: Vec<_> = tools.iter().map(|t| t.name).collect();
        assert_eq!(names, ["bash", "read", "write", "edit", "glob", "grep"]);
        let edit = &tools[3];
        assert_eq!(edit.input_schema["type"], "object");
        let required: Vec<_> =
            edit.input_schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, ["file_path", "old_string", "new_string"]);
        assert!(edit.description.starts_with("Replace a string in a file."), "{}", edit.description);
        let props = edit.input_schema["properties"].as_object().unwrap();
        assert!(props["replace_all"]["description"].as_str().unwrap().contains("every occurrence"));
        // bash needs nothing: `restart` alone is a valid call.
        assert!(tools[0].input_schema.get("required").is_none_or(|r| r.as_array().unwrap().is_empty()));
    }
}
