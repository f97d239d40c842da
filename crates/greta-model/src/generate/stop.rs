//! Stop strings (`generate --stop`): generation ends where the text first contains one, and
//! the text is cut before it, as llama.cpp's and vLLM's stop strings do. Streamed text that
//! could still become a stop string is held back until it cannot.

/// A stop string that is empty would stop every generation before its first token.
#[derive(Debug, thiserror::Error)]
#[error("--stop \"\": an empty stop string would stop before the first token; accepted: any non-empty text")]
pub struct EmptyStop;

#[derive(Clone)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not yet handed out: it may be the start of a stop string.
    pending: String,
}

/// What one piece of streamed text gives.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Text to hand out now: it cannot be part of a stop string.
    pub text: String,
    /// The stop string the text reached, if any (generation ends; `text` ends before it).
    pub stopped_at: Option<String>,
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Result<Self, EmptyStop> {
        if stops.iter().any(String::is_empty) {
            return Err(EmptyStop);
        }
        Ok(StopStrings {
            stops,
            pending: String::new(),
        })
    }

    /// Adds a piece of generated text.
    pub fn push(&mut self, piece: &str) -> Pushed {
        self.pending.push_str(piece);
        // The stop string that starts first in the text (the longest where two start there).
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())));
        if let Some((at, s)) = first {
            let stop = s.clone();
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Pushed {
                text,
                stopped_at: Some(stop),
            };
        }
        // Hold back the longest end of the text that begins some stop string.
        let held = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let text = self.pending[..held].to_string();
        self.pending.drain(..held);
        Pushed {
            text,
            stopped_at: None,
        }
    }

    /// The text held back when generation ended without reaching a stop string.
    pub fn finish(self) -> String {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces as tokens would split them: the output before the stop string is all handed
    /// out, in order, nothing after it, and nothing that could begin one leaves early.
    #[test]
    fn text_stops_before_the_first_stop_string_and_holds_back_its_starts() {
        let mut s = StopStrings::new(vec!["\nUser:".into(), "END".into()]).unwrap();
        let mut out = String::new();
        let mut stopped = None;
        for piece in ["Hello", " wor", "ld\n", "Us", "er", ": next", " turn"] {
            let p = s.push(piece);
            out.push_str(&p.text);
            if p.stopped_at.is_some() {
                stopped = p.stopped_at;
                break;
            }
            // Whatever is held back could still begin a stop string.
            assert!(!out.ends_with('\n'), "{out:?}");
        }
        assert_eq!(out, "Hello world");
        assert_eq!(stopped.as_deref(), Some("\nUser:"));

        let mut s = StopStrings::new(vec!["ab".into()]).unwrap();
        assert_eq!(s.push("xa").text, "x");
        assert_eq!(s.push("c").text, "ac");
        assert_eq!(s.push("é a").text, "é ");
        assert_eq!(s.finish(), "a");
        assert!(StopStrings::new(vec!["".into()]).is_err());
    }

    /// Where two stop strings start at the same place the longer is reported; an earlier one
    /// wins over a longer one further on.
    #[test]
    fn the_first_stop_string_in_the_text_is_the_one_reached() {
        let mut s = StopStrings::new(vec!["<|".into(), "<|end|>".into(), "x".into()]).unwrap();
        let p = s.push("ab<|end|>x");
        assert_eq!(
            (p.text.as_str(), p.stopped_at.as_deref()),
            ("ab", Some("<|end|>"))
        );
        let mut s = StopStrings::new(vec!["<|end|>".into(), "b".into()]).unwrap();
        let p = s.push("ab<|end|>");
        assert_eq!((p.text.as_str(), p.stopped_at.as_deref()), ("a", Some("b")));
    }
}
