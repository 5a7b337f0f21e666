//! Pure parsing for the shell: splitting input into statements and meta-commands, and
//! reading meta-commands.
//!
//! A statement ends at a `;` outside single quotes (`'it''s'`), double-quoted identifiers,
//! `--` line comments and `/* */` block comments. A line that starts with `\` where a
//! statement would start is a meta-command and ends at the end of the line. Text after the
//! last complete item is returned as the rest: the interactive shell keeps it and asks for
//! more; a script runs it as a final statement if it holds anything but comments.

/// One complete piece of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A SQL statement, trimmed, without its `;`.
    Sql(String),
    /// A meta-command line, starting with `\`.
    Meta(String),
}

/// The result of splitting input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The complete items, in order.
    pub items: Vec<Item>,
    /// The incomplete text after them.
    pub rest: String,
    /// Whether `rest` holds SQL (anything but whitespace and comments).
    pub rest_has_sql: bool,
    /// Whether `rest` ends inside a quote or a block comment.
    pub rest_open: bool,
}

/// Splits `input` into complete statements and meta-commands, and the rest.
pub fn split(input: &str) -> Split {
    let bytes = input.as_bytes();
    let mut items = Vec::new();
    let (mut start, mut i, mut has_sql) = (0, 0, false);
    let incomplete = |items, start: usize, has_sql| Split {
        items,
        rest: input[start..].to_string(),
        rest_has_sql: has_sql,
        rest_open: true,
    };
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                has_sql = true;
                match closing_quote(bytes, i + 1, quote) {
                    Some(end) => i = end + 1,
                    None => return incomplete(items, start, has_sql),
                }
            }
            b'-' if next == Some(b'-') => i = line_end(bytes, i),
            b'/' if next == Some(b'*') => match find(bytes, i + 2, b"*/") {
                Some(end) => i = end + 2,
                None => return incomplete(items, start, has_sql),
            },
            b';' => {
                if has_sql {
                    items.push(Item::Sql(input[start..i].trim().to_string()));
                }
                (start, i, has_sql) = (i + 1, i + 1, false);
            }
            b'\\' if !has_sql => {
                let end = line_end(bytes, i);
                items.push(Item::Meta(input[i..end].trim().to_string()));
                (start, i) = (end, end);
            }
            c => {
                has_sql |= !c.is_ascii_whitespace();
                i += 1;
            }
        }
    }
    Split {
        items,
        rest: input[start..].to_string(),
        rest_has_sql: has_sql,
        rest_open: false,
    }
}

/// The index of the quote closing one opened before `from` (a doubled quote is an escape).
fn closing_quote(bytes: &[u8], mut from: usize, quote: u8) -> Option<usize> {
    while from < bytes.len() {
        if bytes[from] == quote {
            if bytes.get(from + 1) == Some(&quote) {
                from += 2;
                continue;
            }
            return Some(from);
        }
        from += 1;
    }
    None
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    find(bytes, from, b"\n").unwrap_or(bytes.len())
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A meta-command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// `\q`: leave the shell.
    Quit,
    /// `\?` or `\h`: show help.
    Help,
    /// `\timing [on|off]`: toggle (or set) printing each statement's elapsed time.
    Timing(Option<bool>),
    /// `\dt` (or `\d` alone): list tables.
    ListTables,
    /// `\d <table>`: describe a table.
    Describe(String),
    /// Anything else.
    Unknown(String),
}

impl Meta {
    /// The SQL this meta-command stands for, if it runs one.
    pub fn sql(&self) -> Option<String> {
        match self {
            Meta::ListTables => Some("SHOW TABLES".to_string()),
            Meta::Describe(table) => Some(format!("SHOW COLUMNS FROM {table}")),
            _ => None,
        }
    }
}

/// Reads a meta-command line (starting with `\`).
pub fn parse_meta(line: &str) -> Meta {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let arg = words.next();
    let extra = words.next().is_some();
    match (command, arg) {
        _ if extra => Meta::Unknown(line.to_string()),
        ("\\q" | "\\quit", None) => Meta::Quit,
        ("\\?" | "\\h" | "\\help", None) => Meta::Help,
        ("\\timing", None) => Meta::Timing(None),
        ("\\timing", Some("on")) => Meta::Timing(Some(true)),
        ("\\timing", Some("off")) => Meta::Timing(Some(false)),
        ("\\dt", None) | ("\\d", None) => Meta::ListTables,
        ("\\d", Some(table)) if valid_table_name(table) => Meta::Describe(table.to_string()),
        _ => Meta::Unknown(line.to_string()),
    }
}

/// A table name as `\d` accepts it: a plain or dotted identifier, or a double-quoted one.
fn valid_table_name(name: &str) -> bool {
    let quoted = name.len() >= 2 && name.starts_with('"') && name.ends_with('"');
    quoted
        || name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
}

/// The help text for `\?`.
pub const HELP: &str = "\
Statements end with ';' and may span lines. Inside a transaction the prompt is 'meridian*>'.
  \\q              quit (also Ctrl-D)
  \\?              this help
  \\timing [on|off] show each statement's elapsed time
  \\dt             list tables (SHOW TABLES)
  \\d <table>      describe a table (SHOW COLUMNS FROM <table>)
Ctrl-C abandons the statement being typed.";

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> Item {
        Item::Sql(s.to_string())
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let s = split("SELECT 'a;b'; SELECT \"x;\" -- c;\n FROM t; /* ; */ SELECT 1;");
        assert_eq!(
            s.items,
            [
                sql("SELECT 'a;b'"),
                sql("SELECT \"x;\" -- c;\n FROM t"),
                sql("/* ; */ SELECT 1")
            ]
        );
        assert_eq!(s.rest, "");
        assert!(!s.rest_has_sql && !s.rest_open);
    }

    #[test]
    fn doubled_quotes_are_escapes() {
        let s = split("INSERT INTO t VALUES ('it''s;'); x");
        assert_eq!(s.items, [sql("INSERT INTO t VALUES ('it''s;')")]);
        assert_eq!(s.rest, " x");
        assert!(s.rest_has_sql);
    }

    #[test]
    fn unterminated_quotes_and_comments_are_open() {
        for input in ["SELECT 1; SELECT 'abc;", "SELECT 1; /* x;"] {
            let s = split(input);
            assert_eq!(s.items, [sql("SELECT 1")]);
            assert!(s.rest_open, "{input}");
        }
    }

    #[test]
    fn empty_statements_and_comments_alone_are_skipped() {
        let s = split(";; -- only a comment\n");
        assert!(s.items.is_empty());
        assert!(!s.rest_has_sql);
    }

    #[test]
    fn meta_commands_take_a_line_at_statement_start() {
        let s = split("\\timing\nSELECT 1;\n\\d accounts\nSELECT '\\x'\n");
        assert_eq!(
            s.items,
            [
                Item::Meta("\\timing".into()),
                sql("SELECT 1"),
                Item::Meta("\\d accounts".into())
            ]
        );
        assert_eq!(s.rest, "\nSELECT '\\x'\n");
    }

    #[test]
    fn multibyte_text_survives() {
        let s = split("SELECT 'é;ü'; SELECT 'ø'");
        assert_eq!(s.items, [sql("SELECT 'é;ü'")]);
        assert_eq!(s.rest, " SELECT 'ø'");
    }

    #[test]
    fn meta_commands_parse() {
        assert_eq!(parse_meta("\\q"), Meta::Quit);
        assert_eq!(parse_meta("\\?"), Meta::Help);
        assert_eq!(parse_meta("\\timing"), Meta::Timing(None));
        assert_eq!(parse_meta("\\timing off"), Meta::Timing(Some(false)));
        assert_eq!(parse_meta("\\dt"), Meta::ListTables);
        assert_eq!(parse_meta("\\d"), Meta::ListTables);
        assert_eq!(
            parse_meta("\\d  accounts "),
            Meta::Describe("accounts".into())
        );
        assert_eq!(
            Meta::Describe("a".into()).sql().as_deref(),
            Some("SHOW COLUMNS FROM a")
        );
        assert_eq!(Meta::ListTables.sql().as_deref(), Some("SHOW TABLES"));
        assert!(matches!(
            parse_meta("\\d a; DROP TABLE b"),
            Meta::Unknown(_)
        ));
        assert!(matches!(parse_meta("\\x"), Meta::Unknown(_)));
        assert!(matches!(parse_meta("\\q now"), Meta::Unknown(_)));
    }
}
