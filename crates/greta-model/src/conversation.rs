//! A conversation of several turns over one KV cache.
//!
//! Each turn's prompt is the whole conversation rendered through the chat template and
//! tokenized afresh, as transformers' `apply_chat_template` gives it; only the tokens past
//! the longest prefix already in the cache are computed. A reply whose text tokenizes to
//! other ids than the ones it was sampled as (nothing makes sampled ids the canonical
//! encoding of their text) is recomputed from the first id that differs, so the model sees
//! what a fresh prefill of the conversation would give it. llama.cpp's server matches its
//! cache against each request's prompt the same way.

use crate::chat::{self, ChatTemplateError, Message};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("the model has no chat template, which a conversation needs (`greta generate --no-chat` sends raw text)")]
    NoTemplate,
    #[error(transparent)]
    Template(#[from] ChatTemplateError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "the conversation is {tokens} tokens with this message and the context holds \
         {capacity}: start over (/reset in `greta chat`) or raise --ctx"
    )]
    Full { tokens: usize, capacity: usize },
    /// A finished turn's cache length is not one the turn can have left: the caller passed
    /// another turn's or another cache's figures.
    #[error(
        "the cache holds {cache} positions, but the turn kept {reused} and knows {known} \
         tokens in all"
    )]
    CacheMismatch {
        cache: usize,
        reused: usize,
        known: usize,
    },
}

/// The next turn's prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnPrompt {
    /// The whole conversation's tokens, ending with the assistant's turn opened.
    pub ids: Vec<u32>,
    /// How many leading `ids` the cache already holds: cut the cache to this length and
    /// hand `generate` all of `ids`, which computes `ids[reused..]` (never empty: the reply
    /// starts from the last token's logits).
    pub reused: usize,
}

impl TurnPrompt {
    /// Most tokens the reply may have in a cache of `capacity` positions (the last token
    /// sampled is not fed back, so it needs no position).
    pub fn reply_room(&self, capacity: usize) -> Result<usize, ConversationError> {
        if self.ids.len() > capacity {
            return Err(ConversationError::Full {
                tokens: self.ids.len(),
                capacity,
            });
        }
        Ok(capacity + 1 - self.ids.len())
    }
}

pub struct Conversation {
    template: String,
    bos: String,
    eos: String,
    /// The system message every turn starts with (kept across `reset`).
    system: Option<Message>,
    /// The turns so far, user and assistant alternating.
    turns: Vec<Message>,
    /// The tokens whose keys and values the cache holds, in position order.
    cached: Vec<u32>,
}

impl Conversation {
    pub fn new(tok: &Tokenizer, system: Option<String>) -> Result<Self, ConversationError> {
        let template = tok
            .chat_template
            .clone()
            .ok_or(ConversationError::NoTemplate)?;
        let name = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
        Ok(Conversation {
            template,
            bos: name(tok.bos),
            eos: name(tok.eos),
            system: system.map(|content| Message {
                role: "system".into(),
                content,
            }),
            turns: Vec::new(),
            cached: Vec::new(),
        })
    }

    /// The messages so far: the system message, then the turns.
    pub fn messages(&self) -> Vec<Message> {
        self.system.iter().chain(&self.turns).cloned().collect()
    }

    /// The tokens whose keys and values the cache holds.
    pub fn cached(&self) -> &[u32] {
        &self.cached
    }

    /// The prompt for `user`'s next message: the conversation with it, through the template.
    pub fn prompt(&self, tok: &Tokenizer, user: &str) -> Result<TurnPrompt, ConversationError> {
        let mut messages = self.messages();
        messages.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        let text = chat::render(&self.template, &messages, &self.bos, &self.eos)?;
        // Without the tokenizer's own BOS and EOS: the template writes the special tokens the
        // model expects (Llama 2 and 3 begin with `bos_token`), as transformers'
        // apply_chat_template tokenizes (add_special_tokens=False) and vLLM's chat does;
        // adding BOS here too would start such prompts with two.
        let ids = tok.encode(&text, false)?;
        Ok(TurnPrompt {
            reused: reusable(&self.cached, &ids),
            ids,
        })
    }

    /// Records a finished turn: `user`'s message, the reply's text as shown, and what the
    /// cache holds now: `cache_len` positions of the prompt's ids followed by `sampled`
    /// (every token the turn sampled, `GenerateStats::tokens`).
    pub fn record(
        &mut self,
        user: String,
        reply: String,
        turn: &TurnPrompt,
        sampled: &[u32],
        cache_len: usize,
    ) -> Result<(), ConversationError> {
        let known = turn.ids.len() + sampled.len();
        if cache_len > known || cache_len < turn.reused {
            return Err(ConversationError::CacheMismatch {
                cache: cache_len,
                reused: turn.reused,
                known,
            });
        }
        self.cached = turn
            .ids
            .iter()
            .chain(sampled)
            .take(cache_len)
            .copied()
            .collect();
        self.turns.push(Message {
            role: "user".into(),
            content: user,
        });
        self.turns.push(Message {
            role: "assistant".into(),
            content: reply,
        });
        Ok(())
    }

    /// A turn that failed part way: the conversation is as before it, and the cache is to
    /// be cut to the returned length (what the turn left unchanged).
    pub fn abandon(&mut self, turn: &TurnPrompt) -> usize {
        self.cached.truncate(turn.reused);
        turn.reused
    }

    /// Starts over with the same system message. The cache keeps its tokens: the next turn
    /// reuses what it shares with them (the system turn, at least).
    pub fn reset(&mut self) {
        self.turns.clear();
    }
}

/// How many leading `ids` a cache holding `cached` can keep: their common prefix, less
/// the last id (computed again for its logits) where all of `ids` is shared.
fn reusable(cached: &[u32], ids: &[u32]) -> usize {
    let shared = cached.iter().zip(ids).take_while(|(a, b)| a == b).count();
    shared.min(ids.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(ids: &[u32], reused: usize) -> TurnPrompt {
        TurnPrompt {
            ids: ids.to_vec(),
            reused,
        }
    }

    #[test]
    fn reuse_is_the_common_prefix_less_a_last_token_to_compute() {
        assert_eq!(reusable(&[], &[1, 2]), 0);
        assert_eq!(reusable(&[1, 2, 9], &[1, 2, 3, 4]), 2);
        // A reply re-tokenized otherwise: computed again from the first id that differs.
        assert_eq!(reusable(&[1, 2, 3, 7, 8], &[1, 2, 3, 78, 5, 6]), 3);
        // After a reset the cache holds more than the new prompt shares.
        assert_eq!(reusable(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 9]), 3);
        // Everything cached: the last token is still computed, for the reply's logits.
        assert_eq!(reusable(&[1, 2, 3], &[1, 2, 3]), 2);
        assert_eq!(reusable(&[1, 2, 3, 4], &[1, 2, 3]), 2);
    }

    #[test]
    fn a_recorded_turn_caches_the_prompt_and_the_fed_part_of_the_reply() {
        let mut c = Conversation {
            template: String::new(),
            bos: String::new(),
            eos: String::new(),
            system: None,
            turns: Vec::new(),
            cached: vec![1, 2, 9],
        };
        let t = turn(&[1, 2, 3, 4], 2);
        // Sampled 5, 6 and the end of turn 7: 7 was never fed.
        c.record("q".into(), "a".into(), &t, &[5, 6, 7], 6).unwrap();
        assert_eq!(c.cached(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(c.messages().len(), 2);
        for bad in [1, 8] {
            let e = c.record("q".into(), "a".into(), &t, &[5, 6, 7], bad);
            assert!(
                matches!(e, Err(ConversationError::CacheMismatch { cache, .. }) if cache == bad),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(c.abandon(&t), 2);
        assert_eq!(c.cached(), &[1, 2]);
        c.reset();
        assert!(c.messages().is_empty());
    }

    #[test]
    fn reply_room_counts_the_last_token_as_free_and_refuses_an_overfull_prompt() {
        assert_eq!(turn(&[1, 2, 3], 0).reply_room(3).unwrap(), 1);
        assert_eq!(turn(&[1, 2, 3], 0).reply_room(10).unwrap(), 8);
        let e = turn(&[1, 2, 3, 4], 0).reply_room(3).unwrap_err();
        assert!(
            e.to_string().contains("4 tokens") && e.to_string().contains("holds 3"),
            "{e}"
        );
    }
}
