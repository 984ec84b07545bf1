//! What travels through Redis: task entries, result entries, and the
//! parsing of Redis replies. Every byte read from Redis is untrusted: a
//! missing or malformed field is an error naming it, never a panic.

use redis::Value;

/// A stream entry: its id and its fields, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Fields,
}

impl Entry {
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn text(&self, name: &str) -> Result<&str, String> {
        let v = self
            .get(name)
            .ok_or_else(|| format!("entry {} has no field {name:?}", self.id))?;
        std::str::from_utf8(v).map_err(|_| format!("entry {}: field {name:?} is not text", self.id))
    }

    pub(crate) fn number(&self, name: &str) -> Result<u64, String> {
        self.text(name)?
            .parse()
            .map_err(|_| format!("entry {}: field {name:?} is not a number", self.id))
    }
}

/// The bytes of a string-like reply.
pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// The fields of an entry as `(name, value)` pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A string-like reply as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

/// An integer reply (or a string holding one).
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

pub(crate) fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// `[id, [f1, v1, f2, v2, …]]`, as XRANGE, XREAD and XCLAIM give each entry.
pub(crate) fn entry(v: &Value) -> Result<Entry, String> {
    let a = array(v).ok_or("a stream entry is not an array")?;
    let [id, fields] = a else {
        return Err(format!("a stream entry has {} parts, not 2", a.len()));
    };
    let id = text(id).ok_or("a stream entry's id is not text")?;
    Ok(Entry {
        fields: flat_fields(fields).map_err(|e| format!("entry {id}: {e}"))?,
        id,
    })
}

/// `[f1, v1, f2, v2, …]` (or a map) as pairs.
fn flat_fields(v: &Value) -> Result<Fields, String> {
    if let Value::Map(m) = v {
        return m
            .iter()
            .map(|(k, v)| Ok((bytes(k).ok_or("bad field")?, bytes(v).ok_or("bad value")?)))
            .collect();
    }
    let a = array(v).ok_or("fields are not an array")?;
    if a.len() % 2 != 0 {
        return Err("an odd number of field parts".into());
    }
    a.chunks(2)
        .map(|kv| {
            Ok((
                bytes(&kv[0]).ok_or("a field name is not a string")?,
                bytes(&kv[1]).ok_or("a field value is not a string")?,
            ))
        })
        .collect()
}

/// The entries of an XREAD / XREADGROUP reply for one stream (`Nil` when
/// the wait timed out). Entries that are gone (a nil field list, which
/// XREADGROUP gives for deleted pending entries) come with no fields.
pub(crate) fn read_reply(v: &Value) -> Result<Vec<Entry>, String> {
    let streams: Vec<&Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        other => array(other)
            .ok_or("a read reply is not an array")?
            .iter()
            .map(|s| match array(s) {
                Some([_, entries]) => Ok(entries),
                _ => Err("a read reply's stream is not [name, entries]".to_string()),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for entries in streams {
        for e in array(entries).ok_or("a stream's entries are not an array")? {
            match array(e) {
                Some([id, Value::Nil]) => out.push(Entry {
                    id: text(id).ok_or("an entry id is not text")?,
                    fields: Vec::new(),
                }),
                _ => out.push(entry(e)?),
            }
        }
    }
    Ok(out)
}

/// The janitor script's reply: `[cursor, [[id, deliveries, [fields]], …]]`.
pub(crate) fn claimed(v: &Value) -> Result<(String, Vec<(Entry, u32)>), String> {
    let Some([cursor, items]) = array(v) else {
        return Err("the janitor's reply is not [cursor, entries]".into());
    };
    let cursor = text(cursor).ok_or("the janitor's cursor is not text")?;
    let items = match items {
        Value::Nil => &[][..],
        other => array(other).ok_or("the janitor's entries are not an array")?,
    };
    let entries = items
        .iter()
        .map(|item| match array(item) {
            Some([id, n, fields]) => {
                let id = text(id).ok_or("a claimed id is not text")?;
                let n = int(n)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("a delivery count is not a number")?;
                let fields = flat_fields(fields)?;
                Ok((Entry { id, fields }, n))
            }
            _ => Err("a claimed entry is not [id, deliveries, fields]".to_string()),
        })
        .collect::<Result<_, String>>()?;
    Ok((cursor, entries))
}

/// What a task entry carries.
#[derive(Clone, Debug)]
pub(crate) struct TaskEntry {
    /// The task id: the idempotency key.
    pub(crate) task_id: String,
    /// The registered name.
    pub(crate) name: String,
    /// Its type fingerprint.
    pub(crate) types: u64,
    /// The caller's build id (hex).
    pub(crate) build: String,
    /// The caller's registry fingerprint.
    pub(crate) registry: u64,
    /// The items (postcard of `Vec<ByteBuf>`), or `None` when they are in
    /// the blob key.
    pub(crate) args: Option<Vec<u8>>,
    /// The job's index (its id in the caller's pool: ordered `imap`).
    pub(crate) index: u64,
    /// The caller's result stream.
    pub(crate) reply: String,
    /// Deliveries before it is dead-lettered.
    pub(crate) max: u32,
}

impl TaskEntry {
    pub(crate) fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut f = vec![
            ("id", self.task_id.clone().into_bytes()),
            ("task", self.name.clone().into_bytes()),
            ("types", self.types.to_string().into_bytes()),
            ("build", self.build.clone().into_bytes()),
            ("reg", self.registry.to_string().into_bytes()),
            ("index", self.index.to_string().into_bytes()),
            ("max", self.max.to_string().into_bytes()),
            ("reply", self.reply.clone().into_bytes()),
        ];
        match &self.args {
            Some(a) => f.push(("args", a.clone())),
            None => f.push(("blob", b"1".to_vec())),
        }
        f
    }

    pub(crate) fn parse(e: &Entry) -> Result<TaskEntry, String> {
        Ok(TaskEntry {
            task_id: e.text("id")?.to_owned(),
            name: e.text("task")?.to_owned(),
            types: e.number("types")?,
            build: e.text("build")?.to_owned(),
            registry: e.number("reg")?,
            args: match (e.get("args"), e.get("blob")) {
                (Some(a), _) => Some(a.to_vec()),
                (None, Some(_)) => None,
                (None, None) => return Err(format!("entry {} has no arguments", e.id)),
            },
            index: e.number("index")?,
            reply: e.text("reply")?.to_owned(),
            max: u32::try_from(e.number("max")?)
                .map_err(|_| format!("entry {}: field \"max\" is out of range", e.id))?,
        })
    }
}

/// What a result entry says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The chunk's encoded results.
    Done(Vec<u8>),
    /// Dead-lettered after `deliveries`.
    Lost { deliveries: u32, reason: String },
    /// The worker could not run it.
    Refused(String),
    /// Dead-lettered because no worker runs a build that can.
    Skew(String),
}

/// Result entry kinds.
pub(crate) const OK: &str = "ok";
pub(crate) const LOST: &str = "lost";
pub(crate) const REFUSED: &str = "refused";
pub(crate) const SKEW: &str = "skew";

/// A result entry: its job and what became of it.
pub(crate) fn parse_result(e: &Entry) -> Result<(u64, Outcome), String> {
    let job = e.number("job")?;
    let v = e
        .get("v")
        .ok_or_else(|| format!("result {} has no value", e.id))?;
    let out = match e.text("k")? {
        OK => Outcome::Done(v.to_vec()),
        LOST => Outcome::Lost {
            deliveries: e
                .number("n")
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            reason: String::from_utf8_lossy(v).into_owned(),
        },
        REFUSED => Outcome::Refused(String::from_utf8_lossy(v).into_owned()),
        SKEW => Outcome::Skew(String::from_utf8_lossy(v).into_owned()),
        other => return Err(format!("result {}: unknown kind {other:?}", e.id)),
    };
    Ok((job, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_task_entry_round_trips_and_bad_ones_are_errors() {
        let t = TaskEntry {
            task_id: "c:1".into(),
            name: "m::square".into(),
            types: 7,
            build: "ab".into(),
            registry: 9,
            args: Some(vec![1, 2, 3]),
            index: 4,
            reply: "mproc:r:c".into(),
            max: 5,
        };
        let e = Entry {
            id: "1-0".into(),
            fields: t
                .fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        };
        let back = TaskEntry::parse(&e).unwrap();
        assert_eq!((back.task_id.as_str(), back.index), ("c:1", 4));
        assert_eq!(back.args.as_deref(), Some(&[1u8, 2, 3][..]));
        let mut bad = e.clone();
        bad.fields.retain(|(k, _)| k != b"types");
        assert!(TaskEntry::parse(&bad).unwrap_err().contains("types"));
        let mut bad = e;
        bad.fields[2].1 = b"x".to_vec();
        assert!(TaskEntry::parse(&bad).is_err());
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for v in [
            bulk("x"),
            Value::Array(vec![bulk("s")]),
            Value::Array(vec![Value::Array(vec![bulk("s"), bulk("x")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("s"),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("f")]),
                ])]),
            ])]),
        ] {
            assert!(read_reply(&v).is_err(), "{v:?}");
        }
        assert!(read_reply(&Value::Nil).unwrap().is_empty());
        let good = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![
                    bulk("job"),
                    bulk("3"),
                    bulk("k"),
                    bulk("ok"),
                    bulk("v"),
                    bulk(""),
                ]),
            ])]),
        ])]);
        let e = read_reply(&good).unwrap();
        assert_eq!(parse_result(&e[0]).unwrap(), (3, Outcome::Done(Vec::new())));
        let e = Entry {
            id: "1-0".into(),
            fields: vec![
                (b"job".to_vec(), b"3".to_vec()),
                (b"k".to_vec(), b"??".to_vec()),
            ],
        };
        assert!(parse_result(&e).is_err());
        assert!(claimed(&Value::Array(vec![bulk("x")])).is_err());
        assert!(claimed(&Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![bulk("x")])
        ]))
        .is_err());
        let (cursor, none) =
            claimed(&Value::Array(vec![bulk("0-0"), Value::Array(vec![])])).unwrap();
        assert_eq!((cursor.as_str(), none.len()), ("0-0", 0));
    }
}
