//! Chat templates (Jinja, as shipped in GGUF metadata and tokenizer_config.json), rendered
//! with minijinja plus Python-compatible string methods.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct ChatTemplateError(String);

/// Renders `messages` with the model's template, ending with the assistant's turn opened.
pub fn render(
    template: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
) -> Result<String, ChatTemplateError> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| ChatTemplateError(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| ChatTemplateError(e.to_string()))?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| ChatTemplateError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods() {
        let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(
            t,
            &[Message {
                role: "user".into(),
                content: " hi ".into(),
            }],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let e = render(
            "{{ raise_exception('only user/assistant roles') }}",
            &[],
            "",
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only user/assistant roles"), "{e}");
    }
}
