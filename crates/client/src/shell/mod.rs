//! The interactive SQL shell (`meridian sql`), as a library so the `meridian` binary calls
//! [`run`].
//!
//! Two modes:
//! - scripts: with `-e` ([`ShellOptions::execute`]) or when stdin is not a terminal, the whole
//!   input is split into statements (on `;` outside quotes and comments) and run in order in
//!   one session; the first error is printed to stderr and ends the run with exit code 1.
//! - interactive: rustyline line editing with history in `~/.meridian_history`, statements
//!   that span lines until their `;`, meta-commands (`\?` lists them), result tables, and a
//!   prompt that shows an open transaction (`meridian*> `). Errors are printed and the
//!   session goes on.
//!
//! All statements run in one [`Session`], so `BEGIN ... COMMIT` works across lines. If the
//! server loses the session (`not_found`) the shell opens a new one and says so.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use rustyline::error::ReadlineError;

use crate::client::{Client, ClientOptions};
use crate::error::{Code, Error};
use crate::session::Session;

pub mod parse;
pub mod render;

use parse::{Item, Meta};

/// How to run the shell.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    /// Node addresses (`host:port` or `http://host:port`), tried in order.
    pub urls: Vec<String>,
    /// SQL to run instead of reading input (`-e`); the shell exits after it.
    pub execute: Option<String>,
    /// Print each statement before running it (scripts only).
    pub echo: bool,
    /// Start with `\timing` on.
    pub timing: bool,
    /// Where to keep interactive history; `None` means `$HOME/.meridian_history` (no history
    /// if `HOME` is unset).
    pub history_file: Option<PathBuf>,
    /// Connection and retry settings.
    pub client: ClientOptions,
}

impl Default for ShellOptions {
    fn default() -> ShellOptions {
        ShellOptions {
            urls: vec!["http://127.0.0.1:26257".to_string()],
            execute: None,
            echo: false,
            timing: false,
            history_file: None,
            client: ClientOptions::default(),
        }
    }
}

/// Runs the shell; returns the process exit code (0, or 1 after a failed script statement).
/// Fails only if no node can be reached or the terminal cannot be used.
pub async fn run(options: ShellOptions) -> Result<i32, Error> {
    let client = Client::connect_with(&options.urls, options.client.clone()).await?;
    let mut shell = Shell::new(client, options.timing, options.echo);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    if let Some(script) = &options.execute {
        return Ok(shell.run_script(script, &mut stdout, &mut stderr).await);
    }
    if !std::io::stdin().is_terminal() {
        let script = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
            .await
            .map_err(|e| Error::new(Code::Client, format!("reading stdin: {e}")))?
            .map_err(|e| Error::new(Code::Client, format!("reading stdin: {e}")))?;
        return Ok(shell.run_script(&script, &mut stdout, &mut stderr).await);
    }
    shell.interactive(history_file(&options)).await
}

fn history_file(options: &ShellOptions) -> Option<PathBuf> {
    options.history_file.clone().or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".meridian_history"))
    })
}

/// What to do after an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    Quit,
    Failed,
}

/// The shell's state: the client, its session and its settings.
#[derive(Debug)]
pub struct Shell {
    client: Client,
    session: Option<Session>,
    timing: bool,
    echo: bool,
}

type Out<'a> = &'a mut (dyn Write + Send);

impl Shell {
    /// A shell on `client`.
    pub fn new(client: Client, timing: bool, echo: bool) -> Shell {
        Shell {
            client,
            session: None,
            timing,
            echo,
        }
    }

    /// Whether the session is inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.session.as_ref().is_some_and(Session::in_transaction)
    }

    /// The prompt for the next statement.
    pub fn prompt(&self, continuation: bool) -> &'static str {
        match (continuation, self.in_transaction()) {
            (true, _) => "meridian-> ",
            (false, true) => "meridian*> ",
            (false, false) => "meridian> ",
        }
    }

    /// Runs a whole script, stopping at the first error; returns the exit code.
    pub async fn run_script(&mut self, script: &str, out: Out<'_>, err: Out<'_>) -> i32 {
        let split = parse::split(script);
        let mut items = split.items;
        if split.rest_open {
            let _ = writeln!(
                err,
                "ERROR: syntax: unterminated quote or comment at the end"
            );
            return 1;
        }
        if split.rest_has_sql {
            items.push(Item::Sql(split.rest.trim().to_string()));
        }
        for item in &items {
            if self.echo {
                let _ = match item {
                    Item::Sql(sql) => writeln!(out, "{sql};"),
                    Item::Meta(meta) => writeln!(out, "{meta}"),
                };
            }
            match self.run_item(item, out, err).await {
                Step::Continue => {}
                Step::Quit => return 0,
                Step::Failed => return 1,
            }
        }
        0
    }

    async fn run_item(&mut self, item: &Item, out: Out<'_>, err: Out<'_>) -> Step {
        let sql = match item {
            Item::Sql(sql) => sql.clone(),
            Item::Meta(line) => match parse::parse_meta(line) {
                Meta::Quit => return Step::Quit,
                Meta::Help => {
                    let _ = writeln!(out, "{}", parse::HELP);
                    return Step::Continue;
                }
                Meta::Timing(on) => {
                    self.timing = on.unwrap_or(!self.timing);
                    let state = if self.timing { "on" } else { "off" };
                    let _ = writeln!(out, "Timing is {state}.");
                    return Step::Continue;
                }
                Meta::Unknown(line) => {
                    let _ = writeln!(err, "ERROR: unknown command {line:?}; \\? lists commands");
                    return Step::Failed;
                }
                meta @ (Meta::ListTables | Meta::Describe(_)) => meta.sql().unwrap_or_default(),
            },
        };
        match self.run_sql(&sql, out).await {
            Ok(()) => Step::Continue,
            Err(e) => {
                let _ = writeln!(err, "ERROR: {e}");
                Step::Failed
            }
        }
    }

    async fn run_sql(&mut self, sql: &str, out: Out<'_>) -> Result<(), Error> {
        let session = match &mut self.session {
            Some(session) if session.id().is_some() => session,
            slot => {
                if slot.is_some() {
                    let _ = writeln!(
                        out,
                        "NOTICE: the server lost the session; opened a new one (any open \
                         transaction was rolled back)"
                    );
                }
                slot.insert(self.client.session().await?)
            }
        };
        let started = Instant::now();
        let executed = session.execute(sql, &[]).await;
        let elapsed = started.elapsed();
        let results = match executed {
            Ok(results) => results,
            Err(e) => {
                // Outside a transaction a session costs nothing to replace: the next statement
                // gets a new one, on the next node if this one is down.
                if e.code() == Code::Unavailable && !session.in_transaction() {
                    self.session = None;
                }
                return Err(e);
            }
        };
        for result in &results {
            let _ = out.write_all(render::render(result).as_bytes());
        }
        if self.timing {
            let _ = out.write_all(render::render_elapsed(elapsed).as_bytes());
        }
        Ok(())
    }

    async fn interactive(&mut self, history: Option<PathBuf>) -> Result<i32, Error> {
        let terminal = |e: ReadlineError| Error::new(Code::Client, format!("terminal: {e}"));
        let mut editor = rustyline::DefaultEditor::new().map_err(terminal)?;
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        let _ = writeln!(
            stdout,
            "Connected to {}. Type \\? for help, \\q to quit.",
            self.client.current_url()
        );
        let mut buffer = String::new();
        loop {
            let prompt = self.prompt(!buffer.is_empty());
            // rustyline blocks; run it off the async workers, handing the editor back.
            let (returned, line) = tokio::task::spawn_blocking(move || {
                let line = editor.readline(prompt);
                (editor, line)
            })
            .await
            .map_err(|e| Error::new(Code::Client, format!("terminal: {e}")))?;
            editor = returned;
            match line {
                Ok(line) => {
                    buffer.push_str(&line);
                    buffer.push('\n');
                }
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(terminal(e)),
            }
            let split = parse::split(&buffer);
            let done = buffer[..buffer.len() - split.rest.len()].trim();
            if !done.is_empty() {
                let _ = editor.add_history_entry(done);
            }
            let mut quit = false;
            for item in &split.items {
                quit = self.run_item(item, &mut stdout, &mut stderr).await == Step::Quit;
                if quit {
                    break;
                }
            }
            if quit {
                break;
            }
            buffer = if split.rest_has_sql || split.rest_open {
                split.rest
            } else {
                String::new()
            };
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(0)
    }
}
