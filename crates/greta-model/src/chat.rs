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
    // transformers and llama.cpp both give templates today's date this way (Llama 3.2's
    // system turn: "Today Date: 04 Dec 2026"); without it such a template takes its
    // fixed fallback date and the prompt differs from theirs. UTC here (transformers
    // formats the host's local time: the same on a UTC host, a day off near midnight
    // elsewhere); the standard library has no time zones.
    env.add_function("strftime_now", |fmt: String| -> Result<String, Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        strftime(&fmt, now.as_secs() as i64).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
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

/// C's strftime over a UTC time in seconds since 1970, for the specifiers chat templates use
/// (%d %m %Y %y %b %B %a %A %H %M %S %j %e %%); another is an error naming it.
fn strftime(fmt: &str, unix: i64) -> Result<String, String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian; Howard Hinnant's method).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day + i64::from(leap && month > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mname = MONTHS[month as usize - 1];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out += &format!("{day:02}"),
            Some('e') => out += &format!("{day:>2}"),
            Some('m') => out += &format!("{month:02}"),
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &format!("{:02}", year.rem_euclid(100)),
            Some('b') => out += &mname[..3],
            Some('B') => out += mname,
            Some('a') => out += &weekday[..3],
            Some('A') => out += weekday,
            Some('H') => out += &format!("{:02}", secs / 3600),
            Some('M') => out += &format!("{:02}", secs / 60 % 60),
            Some('S') => out += &format!("{:02}", secs % 60),
            Some('j') => out += &format!("{yday:03}"),
            Some('%') => out.push('%'),
            other => {
                return Err(format!(
                    "strftime_now: %{} is not supported; accepted: %d %e %m %Y %y %b %B %a %A %H %M %S %j %%",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
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

    /// Dates as Python's `time.strftime(fmt, time.gmtime(t))` prints them (checked against
    /// it), across a leap day, a year's end and before 1970.
    #[test]
    fn strftime_formats_as_python_does() {
        // 2026-12-04 22:38:34 UTC, a Friday; 2024-02-29 12:00:00, a Thursday;
        // 1969-12-31 23:59:59, a Wednesday.
        assert_eq!(
            strftime(
                "%d %b %Y, %A %H:%M:%S (%j) %y %B %a %e %m %%",
                1_796_423_914
            )
            .unwrap(),
            "04 Dec 2026, Friday 22:38:34 (338) 26 December Fri  4 12 %"
        );
        assert_eq!(
            strftime("%Y-%m-%d %a %j", 1_709_208_000).unwrap(),
            "2024-02-29 Thu 060"
        );
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %A", -1).unwrap(),
            "1969-12-31 23:59:59 Wednesday"
        );
        assert!(strftime("%Q", 0)
            .unwrap_err()
            .contains("%Q is not supported"));
        let out = render("{{ strftime_now('%Y') }}", &[], "", "").unwrap();
        assert!(out.len() == 4 && out.starts_with("20"), "{out}");
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
