//! Chat templates: Jinja rendered with minijinja under HF `apply_chat_template` conventions.
//! Context: `messages` (list of {role, content}), `add_generation_prompt`, `bos_token`,
//! `eos_token`; `raise_exception(msg)` is a function; blocks are trimmed as HF does
//! (`trim_blocks`, `lstrip_blocks`). Common Python string/dict methods used by HF templates
//! (`strip`, `lstrip`, `rstrip`, `startswith`, `endswith`, `split`, `upper`, `lower`, `replace`,
//! `items`, `keys`, `values`, `get`) are provided.
//! `CHATML` is the built-in template used when a tokenizer has none.

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

/// The built-in ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Roles a chat message may have: those of HF chat templates (OpenAI's names; `ipython` is
/// Llama 3's tool-output role). Any other role is a bad row (data/sft.rs): a template would
/// either raise or silently render it as something it is not.
pub const CHAT_ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "ipython",
];

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A compiled chat template with the tokenizer's special tokens bound.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`. The error is the Jinja syntax error as one sentence.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.add_function("raise_exception", |msg: String| -> Result<Value, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.set_unknown_method_callback(py_method);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("the chat template does not parse: {e}"))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply would begin.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| format!("the chat template failed to render: {e}"))
    }
}

fn no_method() -> minijinja::Error {
    minijinja::Error::from(ErrorKind::UnknownMethod)
}

fn str_arg(args: &[Value], i: usize) -> Option<String> {
    args.get(i).and_then(|v| v.as_str()).map(str::to_string)
}

/// Python methods HF templates call on strings and dicts.
fn py_method(
    state: &minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        let chars = str_arg(args, 0);
        let strip_set = |c: char| match &chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        };
        return Ok(match method {
            "strip" => Value::from(s.trim_matches(strip_set)),
            "lstrip" => Value::from(s.trim_start_matches(strip_set)),
            "rstrip" => Value::from(s.trim_end_matches(strip_set)),
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "startswith" => Value::from(chars.is_some_and(|p| s.starts_with(p.as_str()))),
            "endswith" => Value::from(chars.is_some_and(|p| s.ends_with(p.as_str()))),
            "replace" => match (str_arg(args, 0), str_arg(args, 1)) {
                (Some(a), Some(b)) => Value::from(s.replace(&a, &b)),
                _ => return Err(no_method()),
            },
            "split" => match chars {
                Some(sep) => {
                    Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
                }
                None => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            _ => return Err(no_method()),
        });
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )),
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key).unwrap_or_default();
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            _ => Err(no_method()),
        };
    }
    Err(no_method())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<Message> {
        vec![
            Message {
                role: "user".into(),
                content: "hi".into(),
            },
            Message {
                role: "assistant".into(),
                content: "hello".into(),
            },
        ]
    }

    #[test]
    fn chatml_renders_exactly() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        assert_eq!(
            t.render(&msgs(), false).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
        );
        assert_eq!(
            t.render(&msgs()[..1], true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn hf_style_template_with_python_methods_and_exceptions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}[{{ m['role'].upper() }}] {{ m['content'].strip() }}{{ eos_token if m['role'] == 'assistant' }}\n{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let mut m = msgs();
        m[0].content = "  hi \n".into();
        assert_eq!(
            t.render(&m, false).unwrap(),
            "<s>[USER] hi\n[ASSISTANT] hello</s>\n"
        );
        m[1].role = "tool".into();
        let err = t.render(&m, false).unwrap_err();
        assert!(err.contains("bad role tool"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(ChatTemplate::new("{% for m in messages %}", "", "").is_err());
    }
}
