//! `greta chat`: a conversation of several turns read from stdin, one KV cache kept across
//! them, each turn computing only what the cache does not already hold
//! (`greta_model::conversation`).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use greta_hal::PlatformChoice;
use greta_model::conversation::{Conversation, TurnPrompt};
use greta_model::generate::sampler::Sampler;
use greta_model::generate::stop::StopStrings;
use greta_model::generate::{self, Decoding, GenerateStats};
use greta_model::llama::gpu::{GpuLlama, GpuState};
use greta_model::llama::KvCache;

use crate::generate_cmd::{say_loaded, RunArgs, SamplingArgs, TokenText};
use crate::{load_model, resolve_model, ModelArgs};

/// Rows of activations the GPU state holds for a turn's pass (llama.cpp's default
/// micro-batch): sized for the whole context they would take ~1 GB for SmolLM2 at 4096
/// positions (its 49152-entry logits a row, mostly), for passes a chat rarely makes.
const CHAT_ROWS: usize = 512;

#[derive(Args)]
#[command(after_help = "\
Each line of stdin is one message (a line ending in \\ continues on the next). Lines that \
start with / are commands: /reset starts the conversation over (the system message stays), \
/exit ends it (as does the end of stdin); begin a message with // to send it starting with /.

Each turn's prompt is the whole conversation through the model's chat template; the tokens \
it shares with the KV cache are not computed again, so a turn costs its new message and \
the reply, not the conversation so far. The reply streams to stdout; a line on stderr \
gives the turn's token counts and speeds.

On a terminal, a failed turn (a conversation longer than --ctx) is reported and the \
conversation goes on as before it; from a pipe or file it ends the run with exit 1.")]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System message at the start of the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens a reply may have (default: up to the end of its turn, or until the
    /// context is full).
    #[arg(long, short = 'n')]
    max_tokens: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Compute every turn's whole prompt instead of reusing what the cache holds, for
    /// measuring what the reuse saves (the replies agree up to the prefill's rounding:
    /// its products are batched otherwise).
    #[arg(long)]
    no_cache_reuse: bool,
    /// Print one JSON object a turn (a line each) instead of streaming the reply: its
    /// text, token counts, how many prompt tokens came from the cache, why it stopped
    /// (`stop`: stop_string, end_of_generation, context_full or max_tokens; generate
    /// --json's names) and the speeds.
    #[arg(long)]
    json: bool,
}

/// What one line of input asks for.
#[derive(Debug, PartialEq)]
enum Input {
    Message(String),
    Reset,
    Exit,
    Unknown(String),
}

fn parse_input(line: &str) -> Option<Input> {
    if let Some(escaped) = line.strip_prefix("//") {
        return Some(Input::Message(format!("/{escaped}")));
    }
    if let Some(cmd) = line.strip_prefix('/') {
        return Some(match cmd.trim() {
            "reset" => Input::Reset,
            "exit" | "quit" => Input::Exit,
            other => Input::Unknown(other.to_string()),
        });
    }
    (!line.trim().is_empty()).then(|| Input::Message(line.to_string()))
}

/// Reads one message: a line, and the lines after it while one ends in a backslash (the
/// backslash dropped, the newline kept). None at the end of the input.
fn read_message(input: &mut dyn BufRead) -> Result<Option<String>> {
    let mut message = String::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).context("reading stdin")? == 0 {
            return Ok((!message.is_empty()).then_some(message));
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.strip_suffix('\\') {
            Some(part) => {
                message += part;
                message.push('\n');
            }
            None => {
                message += line;
                return Ok(Some(message));
            }
        }
    }
}

/// The cache a conversation keeps, on the backend chosen.
enum Engine {
    Cpu(KvCache),
    Gpu {
        model: Box<GpuLlama>,
        st: Box<GpuState>,
        graph: bool,
    },
}

impl Engine {
    fn len(&self) -> usize {
        match self {
            Engine::Cpu(cache) => cache.len(),
            Engine::Gpu { st, .. } => st.len(),
        }
    }

    /// Keeps the first `len` positions.
    fn cut(&mut self, len: usize) -> Result<()> {
        match self {
            Engine::Cpu(cache) => cache.truncate(len),
            Engine::Gpu { st, .. } => st.rewind(len)?,
        }
        Ok(())
    }

    /// Generates after `ids`, of which the cache holds the first `self.len()`.
    fn generate(
        &mut self,
        model: &greta_model::llama::Llama,
        ids: &[u32],
        decoding: Decoding,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<GenerateStats> {
        Ok(match self {
            Engine::Cpu(cache) => generate::generate(
                model,
                cache,
                ids,
                decoding,
                &mut greta_model::trace::NoTrace,
                on_token,
            )?,
            Engine::Gpu { model, st, graph } => {
                generate::generate_gpu(model, st, ids, decoding, *graph, on_token)?
            }
        })
    }
}

/// One turn's outcome, for the stderr line and `--json`.
struct Reply {
    text: String,
    stats: GenerateStats,
    stop: Stop,
}

/// Why a reply ended.
enum Stop {
    /// Its text reached this `--stop` string.
    String(String),
    /// The model ended its turn with an end-of-generation token (`generate --json`'s name).
    EndOfGeneration,
    /// It ran into the end of the context (not `--max-tokens`).
    ContextFull,
    MaxTokens,
}

impl Stop {
    /// The `--json` name.
    fn name(&self) -> &'static str {
        match self {
            Stop::String(_) => "stop_string",
            Stop::EndOfGeneration => "end_of_generation",
            Stop::ContextFull => "context_full",
            Stop::MaxTokens => "max_tokens",
        }
    }

    /// The end of the stderr line: nothing for a turn the model ended.
    fn said(&self, capacity: usize) -> String {
        match self {
            Stop::String(s) => format!(", stopped at --stop {s:?}"),
            Stop::EndOfGeneration => String::new(),
            Stop::ContextFull => {
                format!(", cut: the context of {capacity} tokens is full (/reset or raise --ctx)")
            }
            Stop::MaxTokens => ", stopped at --max-tokens".to_string(),
        }
    }
}

pub fn cmd_chat(a: ChatArgs, platform: PlatformChoice) -> Result<()> {
    let selection = greta_hal::select(a.run.backend, platform)?;
    let kv_format = a.run.kv.format(&selection.backend)?;
    let sampler_cfg = a.sampling.config();
    let sampler = Sampler::new(sampler_cfg.clone())?;
    // Bad flag values are refused before the model loads.
    let stops = StopStrings::new(a.sampling.stop.clone())?;
    if a.max_tokens == Some(0) {
        anyhow::bail!("--max-tokens 0 leaves no room for a reply; give at least 1 (or leave it out: up to the end of the turn)");
    }
    let path = resolve_model(&a.model)?;
    let t_load = Instant::now();
    let lm = load_model(&path, false)?;
    say_loaded(&path, &lm, &selection, t_load.elapsed());
    let tok = &lm.tokenizer;
    let mut conv = Conversation::new(tok, a.system.clone())?;
    let capacity = a.run.capacity(&lm.model)?;
    let engine = match &selection.backend {
        greta_hal::Backend::Cpu => {
            a.run.gpu.note_unused_on_cpu();
            Engine::Cpu(lm.model.new_cache_as(capacity, kv_format))
        }
        greta_hal::Backend::Gpu(gpu) => {
            let graph = !a.run.no_graph;
            let model = a.run.upload_for_decode(gpu, &lm.model, &sampler_cfg)?;
            // Activations for CHAT_ROWS rows: a turn's new tokens are usually fewer, and a
            // longer turn (the first with a long system message, one after a reset that
            // shares little with the cache) is prefilled in parts of that many.
            let st = model.new_state(capacity, capacity.min(CHAT_ROWS))?;
            Engine::Gpu {
                model: Box::new(model),
                st: Box::new(st),
                graph,
            }
        }
    };
    let mut turns = Turns {
        model: &lm.model,
        tok,
        engine,
        sampler,
        stops,
        max_tokens: a.max_tokens,
        capacity,
        json: a.json,
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chat: a message a line (\\ at the end continues it), /reset starts over, /exit or Ctrl-D ends; context {capacity} tokens"
        );
    }
    let mut input = std::io::stdin().lock();
    let mut done = 0usize;
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = read_message(&mut input)? else {
            break;
        };
        let message = match parse_input(&line) {
            None => continue,
            Some(Input::Exit) => break,
            Some(Input::Reset) => {
                conv.reset();
                eprintln!("(conversation reset; the cache keeps what the next turn shares)");
                continue;
            }
            Some(Input::Unknown(cmd)) => {
                let e = anyhow::anyhow!(
                    "unknown command /{cmd}: accepted /reset, /exit (// sends a message starting with /)"
                );
                if interactive {
                    eprintln!("error: {e}");
                    continue;
                }
                return Err(e);
            }
            Some(Input::Message(m)) => m,
        };
        let mut turn = conv.prompt(tok, &message)?;
        if a.no_cache_reuse {
            turn.reused = 0;
        }
        let reply = match turns.run(&turn) {
            Ok(reply) => reply,
            Err(e) => {
                // The conversation stays as before the turn; the cache keeps what it shared.
                let keep = conv.abandon(&turn);
                let engine = &mut turns.engine;
                engine
                    .cut(keep.min(engine.len()))
                    .context("after a failed turn")?;
                if interactive {
                    eprintln!("error: {e:#}");
                    continue;
                }
                return Err(e.context(format!("turn {}", done + 1)));
            }
        };
        done += 1;
        report(done, &reply, capacity, a.json)?;
        conv.record(
            message,
            reply.text,
            &turn,
            &reply.stats.tokens,
            turns.engine.len(),
        )?;
    }
    Ok(())
}

/// What every turn of a chat uses: the model on its backend, the tokenizer, the sampler
/// (one random stream across the turns) and the flags.
struct Turns<'m> {
    model: &'m greta_model::llama::Llama,
    tok: &'m greta_model::tokenizer::Tokenizer,
    engine: Engine,
    sampler: Sampler,
    stops: StopStrings,
    max_tokens: Option<usize>,
    capacity: usize,
    json: bool,
}

impl Turns<'_> {
    /// Computes `turn` past what the cache shares with it and streams the reply (or keeps
    /// it, for `--json`).
    fn run(&mut self, turn: &TurnPrompt) -> Result<Reply> {
        let Turns {
            model,
            tok,
            engine,
            sampler,
            stops,
            max_tokens,
            capacity,
            json,
        } = self;
        let (tok, max_tokens) = (*tok, *max_tokens);
        let room = turn.reply_room(*capacity)?;
        let max_new = max_tokens.map_or(room, |n| n.min(room));
        engine.cut(turn.reused)?;
        let mut text = TokenText::new(tok, stops.clone(), *json);
        let stats = engine.generate(
            model,
            &turn.ids,
            Decoding {
                max_new,
                sampler,
                is_eog: &|id| tok.is_end_of_generation(id),
            },
            &mut |id| text.push(id),
        )?;
        let (text, stopped_at, _) = text.finish()?;
        let stop = match stopped_at {
            Some(s) => Stop::String(s),
            None if stats.stopped_at_eog => Stop::EndOfGeneration,
            None if stats.generated_tokens() == room && max_tokens.is_none_or(|n| n > room) => {
                Stop::ContextFull
            }
            None => Stop::MaxTokens,
        };
        Ok(Reply { text, stats, stop })
    }
}

fn report(turn_no: usize, reply: &Reply, capacity: usize, json: bool) -> Result<()> {
    let s = &reply.stats;
    if json {
        let v = serde_json::json!({
            "turn": turn_no,
            "text": reply.text,
            "prompt_tokens": s.prompt_tokens,
            "reused_tokens": s.reused_tokens,
            "computed_tokens": s.computed_tokens(),
            "generated_tokens": s.generated_tokens(),
            "stop": reply.stop.name(),
            "stop_string": match &reply.stop {
                Stop::String(s) => Some(s.as_str()),
                _ => None,
            },
            "prefill_ms": s.prefill_time.as_secs_f64() * 1e3,
            "decode_tok_s": s.decode_tok_s(),
            "context": capacity,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}").context("writing to stdout")?;
    }
    eprintln!(
        "[turn {turn_no}: prompt {} tokens, {} from the cache, {} computed in {:.0} ms | reply {} tokens, {:.1} tok/s{}]",
        s.prompt_tokens,
        s.reused_tokens,
        s.computed_tokens(),
        s.prefill_time.as_secs_f64() * 1e3,
        s.generated_tokens(),
        s.decode_tok_s(),
        reply.stop.said(capacity)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_messages_and_escapes() {
        assert_eq!(parse_input("/reset"), Some(Input::Reset));
        assert_eq!(parse_input("/exit "), Some(Input::Exit));
        assert_eq!(parse_input("/quit"), Some(Input::Exit));
        assert_eq!(parse_input("/help"), Some(Input::Unknown("help".into())));
        assert_eq!(parse_input("//etc"), Some(Input::Message("/etc".into())));
        assert_eq!(parse_input("  "), None);
        assert_eq!(parse_input(" hi "), Some(Input::Message(" hi ".into())));
    }

    #[test]
    fn a_trailing_backslash_continues_the_message() {
        let mut input: &[u8] = b"one \\\ntwo\nthree\r\nfour\\\n";
        assert_eq!(
            read_message(&mut input).unwrap().as_deref(),
            Some("one \ntwo")
        );
        assert_eq!(read_message(&mut input).unwrap().as_deref(), Some("three"));
        // A continuation the input ends inside is still sent.
        assert_eq!(read_message(&mut input).unwrap().as_deref(), Some("four\n"));
        assert_eq!(read_message(&mut input).unwrap(), None);
    }
}
