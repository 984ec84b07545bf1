//! The protocol's Lua scripts. Each runs atomically in Redis, so a step
//! that checks ownership and then acts cannot be split by another worker,
//! a janitor, or a crash.
//!
//! Ownership of a delivered task is its entry in the consumer group's
//! pending list: the consumer (a worker's id) *and* the delivery count at
//! the worker's claim. Every claim (XREADGROUP, XCLAIM, XAUTOCLAIM) raises
//! the count, so a worker that lost a task — its lease ran out, or its
//! heartbeat, and another worker claimed it — holds a stale count and is
//! refused, even if the task later comes back to the same consumer.

use redis::{Cmd, Script};

/// Renews the leases of the tasks a worker holds (XCLAIM JUSTID resets the
/// idle time without counting a delivery), fenced by ownership, and
/// returns the ids it no longer owns.
///
/// Then it hands back the worker's orphans: entries pending on it that it
/// does not hold and that nobody renewed for `min idle` — deliveries whose
/// reply never reached it (the connection broke, or Redis restarted, while
/// the reply was on its way). They go to the consumer that never beats, so
/// the next janitor pass gives them to a worker at once, and with their
/// delivery count set back: a delivery that never arrived is not spent.
///
/// KEYS: tasks. ARGV: group, consumer, min idle ms, released consumer,
/// then (id, deliveries) pairs of the tasks it holds.
pub(crate) const RENEW: &str = r"
local lost, held = {}, {}
for i = 5, #ARGV, 2 do
  held[ARGV[i]] = true
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if not ok or #p == 0 or p[1][2] ~= ARGV[2] or tonumber(p[1][4]) ~= tonumber(ARGV[i + 1]) then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
local ok, mine = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 100, ARGV[2])
if ok then
  for _, p in ipairs(mine) do
    if not held[p[1]] then
      local back = math.max(tonumber(p[4]) - 1, 0)
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, p[1], 'RETRYCOUNT', back, 'JUSTID')
    end
  end
end
return lost
";

/// Completes a batch of tasks, each as one atomic step of one script.
///
/// For each task the ownership check comes first: the entry must be
/// pending on this consumer *with the delivery count of this worker's
/// claim* — any later claim raised it — or the result is refused (0) and
/// counted. Then the done-marker (`HSETNX` in the client's done hash, keyed
/// by the job: one result per task, ever), the result XADDed to the
/// client's result stream (both expire unless the client reads them), and
/// the task's blob and failure note removed; the batch's entries are
/// XACKed together. (The entries themselves go with the janitor's trim:
/// deleting them one by one — XDEL — was a third of Redis's time on
/// 10,000 tasks.) Each task's code: 1 (result sent), 2 (the
/// task had a result already: nothing sent), 0 (refused: not ours any
/// more), 3 (its result stream could not take it).
///
/// A repeat of a completion that went through (its reply was lost with a
/// connection) finds its own mark in the done hash and returns 1 again.
///
/// KEYS: tasks, stats. ARGV: group, consumer, ttl ms, then per task nine
/// fields: entry id, deliveries, job, kind, value, result stream, done
/// hash, blob key ('' for none), failure-note key ('' for none).
pub(crate) const COMPLETE: &str = r"
local tasks, group, me, ttl = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local out, acked, expire, refused = {}, {}, {}, 0
for i = 4, #ARGV - 8, 9 do
  local id, count, job, kind, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local reply, done, blob, why = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local mark = me .. '/' .. count
  local ok, p = pcall(redis.call, 'XPENDING', tasks, group, id, id, 1)
  local r = 0
  if not ok or #p == 0 or p[1][2] ~= me or tonumber(p[1][4]) ~= tonumber(count) then
    if redis.call('HGET', done, job) == mark then
      r = 1
    else
      refused = refused + 1
    end
  else
    r = 2
    if redis.call('HSETNX', done, job, mark) == 1 then
      if pcall(redis.call, 'XADD', reply, '*', 'job', job, 'k', kind, 'v', value) then
        r = 1
        expire[reply] = done
      else
        r = 3
      end
    end
    table.insert(acked, id)
    if blob ~= '' then redis.call('DEL', blob) end
    if why ~= '' then redis.call('DEL', why) end
  end
  table.insert(out, r)
end
if #acked > 0 then
  redis.call('XACK', tasks, group, unpack(acked))
end
for reply, done in pairs(expire) do
  redis.call('PEXPIRE', reply, ttl)
  redis.call('PEXPIRE', done, ttl)
end
if refused > 0 then redis.call('HINCRBY', KEYS[2], 'refused', refused) end
return out
";

/// Hands a task back, fenced by ownership: it moves to the consumer that
/// never beats, so the next janitor pass reclaims it at once (counting a
/// delivery). With a retry count, the count is set back (a graceful stop
/// does not spend a delivery). A reason is kept for the dead letter.
/// Returns 1, or 0 when the task was not ours any more.
///
/// KEYS: tasks, why. ARGV: group, entry id, consumer, deliveries, reason
/// ('' for none), released consumer, ttl ms, retry count ('' to keep).
pub(crate) const RELEASE: &str = r"
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok or #p == 0 or p[1][2] ~= ARGV[3] or tonumber(p[1][4]) ~= tonumber(ARGV[4]) then
  return 0
end
if ARGV[8] ~= '' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[6], 0, ARGV[2], 'RETRYCOUNT', ARGV[8], 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[6], 0, ARGV[2], 'JUSTID')
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[7])
end
return 1
";

/// At a worker's start: whatever is still pending under its id is from a
/// previous life of a worker of the same id (it was killed and restarted):
/// hand it all back at once instead of waiting for the leases. Returns how
/// many.
///
/// KEYS: tasks. ARGV: group, consumer, released consumer.
pub(crate) const ADOPT: &str = r"
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if not ok then return 0 end
for _, e in ipairs(p) do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, e[1], 'JUSTID')
end
return #p
";

/// The janitor; the caller runs it only once its connection has been up
/// for a heartbeat TTL, so that after a Redis restart live workers have
/// beaten and renewed before anyone judges them.
///
/// First the fast path: every consumer whose heartbeat key has expired (a
/// dead, stopped or cut-off worker, or the consumer of handed-back tasks)
/// has its pending tasks reclaimed at once; a dead consumer with none is
/// removed from the group. Then the slow path: tasks whose lease ran out
/// (XAUTOCLAIM for a worker, XPENDING IDLE for a client), from a cursor
/// kept between passes. The delivery count is taken at the claim: a task
/// claimed past its limit is dead-lettered — its caller gets a `lost`
/// result (`skew` when the last reason was a version skew), the
/// dead-letter stream a record — instead of being run.
///
/// It also trims the task stream of the entries every consumer is done
/// with (acknowledged ones below the oldest pending entry).
///
/// A worker (`me` set) claims up to `room` tasks to itself; a client (`me`
/// empty) claims nothing and only dead-letters tasks that have used up
/// their deliveries. Returns `[cursor, [[id, deliveries, fields], …]]`.
///
/// KEYS: tasks, dead, stats. ARGV: group, me, lease ms, room, namespace,
/// ttl ms, dead-letter length, released consumer, cursor.
pub(crate) const RECLAIM: &str = r"
local tasks, group, me = KEYS[1], ARGV[1], ARGV[2]
local lease, room, ns, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local released, cursor = ARGV[8], ARGV[9]
local out = {}
local function field(f, name)
  if type(f) ~= 'table' then return nil end
  for i = 1, #f - 1, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function valid_reply(reply)
  local prefix = ns .. ':r:'
  return string.sub(reply, 1, #prefix) == prefix
    and #reply > #prefix and not string.find(reply, ':', #prefix + 1, true)
end
local function bury(id, f, deliveries, reason)
  redis.call('XACK', tasks, group, id)
  redis.call('XDEL', tasks, id)
  local tid, reply, job = field(f, 'id'), field(f, 'reply'), field(f, 'index')
  if tid then
    local why = redis.call('GET', ns .. ':why:' .. tid)
    if why then reason = why end
    local kind = 'lost'
    if string.sub(reason, 1, 13) == 'version skew:' then kind = 'skew' end
    if reply and job and valid_reply(reply) then
      local done = reply .. ':done'
      if redis.call('HSETNX', done, job, 'dead') == 1 then
        if pcall(redis.call, 'XADD', reply, '*', 'job', job, 'k', kind, 'n', deliveries, 'v', reason) then
          redis.call('PEXPIRE', reply, ttl)
        end
        redis.call('PEXPIRE', done, ttl)
      end
    end
    redis.call('DEL', ns .. ':blob:' .. tid, ns .. ':why:' .. tid)
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'id', tid or '', 'task',
    field(f, 'task') or '', 'deliveries', deliveries, 'reason', reason)
  redis.call('HINCRBY', KEYS[3], 'dead', 1)
end
local function limit(f)
  return tonumber(field(f, 'max') or '1') or 1
end
local function fields_of(id)
  local e = redis.call('XRANGE', tasks, id, id)
  if #e == 0 then return nil end
  return e[1][2]
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', tasks, group)
if not ok then return {cursor, out} end
-- The trim: entries every consumer is done with go, a node at a time —
-- those below the oldest pending entry, or when none is pending, below the
-- last one delivered (entries not yet delivered are never touched).
local floor = redis.call('XPENDING', tasks, group)[2]
if not floor then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', tasks)) do
    local name, last = nil, nil
    for i = 1, #g - 1, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then floor = last end
  end
end
if floor then redis.call('XTRIM', tasks, 'MINID', '~', floor) end
-- The fast path: consumers whose heartbeat expired.
for _, c in ipairs(consumers) do
  local name, pending = nil, 0
  for i = 1, #c - 1, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name and name ~= me and redis.call('EXISTS', ns .. ':w:' .. name) == 0 then
    if pending == 0 then
      if name ~= released then redis.call('XGROUP', 'DELCONSUMER', tasks, group, name) end
    else
      local reason = 'its worker ' .. name .. ' stopped beating (dead, stopped or cut off)'
      if name == released then reason = 'it was handed back' end
      for _, p in ipairs(redis.call('XPENDING', tasks, group, '-', '+', 100, name)) do
        local id, n = p[1], tonumber(p[4])
        local f = fields_of(id)
        if not f then
          redis.call('XACK', tasks, group, id)
        elseif n >= limit(f) then
          bury(id, f, n, reason)
        elseif me ~= '' and room > 0 then
          redis.call('XCLAIM', tasks, group, me, 0, id, 'JUSTID', 'RETRYCOUNT', n + 1)
          if name ~= released then
            redis.call('SET', ns .. ':why:' .. (field(f, 'id') or '-'), reason, 'PX', ttl)
          end
          table.insert(out, {id, n + 1, f})
          room = room - 1
        end
      end
    end
  end
end
-- The slow path: leases that ran out.
if me == '' then
  local start = cursor
  if start == '0-0' then start = '-' end
  local idle = redis.call('XPENDING', tasks, group, 'IDLE', lease, start, '+', 100)
  for _, p in ipairs(idle) do
    local id, n = p[1], tonumber(p[4])
    local f = fields_of(id)
    if not f then
      redis.call('XACK', tasks, group, id)
    elseif n >= limit(f) then
      bury(id, f, n, 'its lease ran out on worker ' .. p[2])
    end
  end
  if #idle < 100 then cursor = '0-0' else cursor = '(' .. idle[#idle][1] end
elseif room > 0 then
  local r = redis.call('XAUTOCLAIM', tasks, group, me, lease, cursor, 'COUNT', room)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local id, f = e[1], e[2]
    if type(f) == 'table' then
      local p = redis.call('XPENDING', tasks, group, id, id, 1)
      local n = tonumber(p[1][4])
      local why = 'its lease ran out (its worker stopped renewing it)'
      if n > limit(f) then
        bury(id, f, n - 1, why)
      else
        redis.call('SET', ns .. ':why:' .. (field(f, 'id') or '-'), why, 'PX', ttl)
        table.insert(out, {id, n, f})
      end
    else
      redis.call('XACK', tasks, group, id)
    end
  end
end
return {cursor, out}
";

/// The queue's put: refused when the queue is closed (-1) or full (0);
/// else the item is added (1).
///
/// KEYS: stream, closed flag. ARGV: max items (0: no limit), item.
pub(crate) const QUEUE_PUT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local max = tonumber(ARGV[1])
if max > 0 and redis.call('XLEN', KEYS[1]) >= max then return 0 end
redis.call('XADD', KEYS[1], '*', 'v', ARGV[2])
return 1
";

/// The queue's acknowledgement (a `get` of a plain queue, a `task_done`
/// of a joinable one): XACK and XDEL; when the queue is then empty, a
/// token on the wake list for `join`. Returns the queue's length.
///
/// KEYS: stream, wake list. ARGV: group, entry id.
pub(crate) const QUEUE_ACK: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local n = redis.call('XLEN', KEYS[1])
if n == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], 1000)
end
return n
";

/// The queue's redelivery: an entry a getter took and did not finish
/// within the lease (the getter died: a live one renews its leases) is
/// claimed by this getter, scanning the pending list from a cursor kept
/// between calls. Returns `[cursor, entry or false]`.
///
/// KEYS: stream. ARGV: group, consumer, lease ms, cursor.
pub(crate) const QUEUE_RECLAIM: &str = r"
local ok, r = pcall(redis.call, 'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', 1)
if not ok then return {'0-0', false} end
local e = r[2][1]
if e and type(e[2]) == 'table' then return {r[1], e} end
if e then redis.call('XACK', KEYS[1], ARGV[1], e[1]) end
return {r[1], false}
";

/// A getter renews the leases of the items it holds (got and not yet
/// done), fenced by ownership: an item another getter took over is not
/// taken back. Returns the ids it no longer holds.
///
/// KEYS: stream. ARGV: group, consumer, ids….
pub(crate) const QUEUE_RENEW: &str = r"
local lost = {}
for i = 3, #ARGV do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if not ok or #p == 0 or p[1][2] ~= ARGV[2] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
";

/// A consumer leaves (a worker that stops, a queue handle dropped): it is
/// removed from its group if it holds nothing.
///
/// KEYS: stream. ARGV: group, consumer.
pub(crate) const LEAVE: &str = r"
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if ok and #p == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return 1
";

/// Every script, for loading.
const SOURCES: [&str; 10] = [
    RENEW,
    COMPLETE,
    RELEASE,
    ADOPT,
    RECLAIM,
    QUEUE_PUT,
    QUEUE_ACK,
    QUEUE_RECLAIM,
    QUEUE_RENEW,
    LEAVE,
];

/// The protocol's scripts, loaded once per connection.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) renew: Script,
    pub(crate) complete: Script,
    pub(crate) release: Script,
    pub(crate) adopt: Script,
    pub(crate) reclaim: Script,
    pub(crate) queue_put: Script,
    pub(crate) queue_ack: Script,
    pub(crate) queue_reclaim: Script,
    pub(crate) queue_renew: Script,
    pub(crate) leave: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            renew: Script::new(RENEW),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            adopt: Script::new(ADOPT),
            reclaim: Script::new(RECLAIM),
            queue_put: Script::new(QUEUE_PUT),
            queue_ack: Script::new(QUEUE_ACK),
            queue_reclaim: Script::new(QUEUE_RECLAIM),
            queue_renew: Script::new(QUEUE_RENEW),
            leave: Script::new(LEAVE),
        }
    }

    /// Loads every script, in one round trip (after a connect: a restarted
    /// Redis has none).
    pub(crate) fn load(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for source in SOURCES {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        pipe.query::<()>(con)
    }
}

/// An EVALSHA of `script`, for a pipeline.
pub(crate) fn evalsha(script: &Script, keys: &[&str], args: &[&[u8]]) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(keys.len());
    for k in keys {
        c.arg(*k);
    }
    for a in args {
        c.arg(*a);
    }
    c
}
