//! Touches every public path of the façade, so a broken re-export fails here.

#[test]
fn every_public_path_resolves() {
    use mproc::shm::{self, transfer};

    let _: fn(usize) -> std::io::Result<mproc::Segment> = mproc::Segment::anonymous;
    let _: fn(usize) -> std::io::Result<shm::Segment> = shm::Segment::anonymous;
    let _ = mproc::RawValue::<u8>::new;
    let _ = mproc::RawArray::<u8>::new;
    let _ = mproc::SharedMemory::create;
    let _ = |p: &str| mproc::FileDoc::<u8>::open(p);
    let _ = shm::SharedMemory::options;
    let _: Option<shm::SharedMemoryOptions> = None;
    let _: Option<shm::DocError> = None;
    let _: Option<shm::RangeError> = None;
    let _: Option<shm::IndexError> = None;
    let _: Option<(shm::Json, shm::Postcard)> = None;
    let _ = <shm::Json as shm::Format>::encode::<u8>;
    let _ = shm::MAX_NAME_LEN;
    let _ = transfer::encode::<u8>;
    let _ = transfer::decode::<u8>;
    let _ = transfer::send;
    let _ = transfer::recv;
    let _ = transfer::spawn_inheriting;
    let _ = transfer::FdTable::new;
    let _ = transfer::FdRef::export;
    let _: Option<transfer::TransferError> = None;
    let _ = (
        transfer::INHERIT_ENV,
        transfer::MAX_FDS,
        transfer::MAX_MESSAGE_LEN,
    );
    let _: Option<transfer::Message> = None;
    let _ = <u32 as shm::bytemuck::Zeroable>::zeroed;

    use mproc::sync::{self, wait};
    let _ = mproc::Lock::new;
    let _ = mproc::RLock::new;
    let _ = mproc::Semaphore::new;
    let _ = mproc::BoundedSemaphore::new;
    let _ = mproc::Condition::new;
    let _ = mproc::Event::new;
    let _ = mproc::Barrier::new;
    let _ = mproc::Value::<u8>::new;
    let _ = mproc::Array::<u8>::new;
    let _: Option<(sync::LockGuard<'_>, sync::RLockGuard<'_>)> = None;
    let _: Option<sync::OwnerDied<sync::LockGuard<'_>>> = None;
    let _: Option<sync::TryLockError<sync::RLockGuard<'_>>> = None;
    let _: Option<sync::LockTimeoutError<sync::LockGuard<'_>>> = None;
    let _: Option<sync::LockFailure> = None;
    let _: Option<sync::LockResult<sync::LockGuard<'_>>> = None;
    let _: Option<sync::TryLockResult<sync::LockGuard<'_>>> = None;
    let _: Option<sync::LockTimeoutResult<sync::RLockGuard<'_>>> = None;
    let _: Option<(
        sync::Acquired,
        sync::AcquireError,
        sync::NotOwner,
        sync::OverRelease,
    )> = None;
    let _: Option<(sync::WaitError, sync::BrokenBarrier)> = None;
    let _: Option<(sync::ValueGuard<'_, u8>, sync::ArrayGuard<'_, u8>)> = None;
    let _ = (sync::PROBE_INTERVAL, sync::MAX_PARTIES, wait::MAX_SPIN);
    let _ = wait::wait;
    let _ = (wait::wake_one, wait::wake_all, wait::wake, wait::deadline);
    let _: Option<wait::WaitResult> = None;
    fn takes_condition_lock<L: sync::ConditionLock>() {}
    takes_condition_lock::<mproc::Lock>();
    use mproc::process;
    fn unit(_: u8) {}
    let _ = || mproc::Process::new(unit, 1);
    let _ = mproc::Process::from_target::<Nothing>;
    let _ = mproc::current_process;
    let _: Option<(
        mproc::StartMethod,
        process::ProcessInfo,
        process::ProcessError,
    )> = None;
    let _ = (
        process::active_children,
        process::parent_process,
        process::cpu_count,
    );
    let _ = (process::set_start_method, process::get_start_method);
    let _ = (mproc::Process::detach, process::ProcessInfo::is_alive);
    let _ = (process::DAEMON_EXIT_GRACE, process::forkserver_pid);
    let _: fn(i32) -> ! = process::exit;
    fn outcome<O: process::Outcome>() {}
    outcome::<()>();

    use mproc::queue;
    let _ = mproc::Queue::<u8>::new;
    let _ = mproc::Queue::<u8>::bounded;
    let _ = mproc::SimpleQueue::<u8>::new;
    let _ = mproc::JoinableQueue::<u8>::new;
    let _ = mproc::Pipe::<u8>::duplex;
    let _ = mproc::Pipe::<u8>::simplex;
    let _: Option<mproc::Connection<u8>> = None;
    let _ = (queue::DEFAULT_CAPACITY, queue::PIPE_CAPACITY);
    let _: Option<(queue::Stats, queue::TaskDoneError, queue::FrameError)> = None;
    let _: Option<(queue::PutError<u8>, queue::TryPutError<u8>)> = None;
    let _: Option<(queue::GetError, queue::TryGetError, queue::GetTimeoutError)> = None;
    let _: Option<(
        queue::SendError<u8>,
        queue::RecvError,
        queue::RecvTimeoutError,
    )> = None;
    let _: Option<(queue::BadMessage, queue::EncodeError<u8>)> = None;
    let _ = queue::frame::decode_stream;

    use mproc::pool;
    let _ = mproc::Pool::new;
    let _ = mproc::Pool::builder;
    let _: Option<(mproc::AsyncResult<u8>, pool::Builder, pool::PoolError)> = None;
    let _: Option<pool::Imap<'_, u8, u8, std::ops::Range<u8>>> = None;
    let _ = || mproc::spawn(echo, 1);
    let _: Option<(mproc::JoinHandle<u8>, process::Builder, process::JoinError)> = None;
    let _: Option<(mproc::call::RemoteFn<u8, u8>, mproc::call::CallError)> = None;

    use mproc::redis;
    let _ = redis::RedisBackend::connect;
    let _ = redis::RedisBackend::with_options;
    let _ = redis::Worker::connect;
    let _ = redis::Queue::<u8>::open;
    let _ = redis::JoinableQueue::<u8>::open;
    let _ = redis::Options::default;
    let _ = redis::Registry::new;
    let _ = redis::registry_fingerprint;
    let _ = redis::current_worker;
    let _: Option<(redis::Error, redis::GetError, redis::PutError<u8>)> = None;
    let _: Option<(redis::ClientStats, redis::WorkerStats, redis::WorkerHandle)> = None;
    let _: Option<redis::Task> = None;

    use mproc::manager;
    let _ = mproc::Manager::new;
    let _ = manager::Manager::builder;
    let _ = |a: &str| manager::Client::connect_tcp(a, b"k");
    let _: Option<manager::Dict<u8, u8>> = None;
    let _: Option<(manager::List<u8>, manager::SharedValue<u8>)> = None;
    let _: Option<(manager::Builder, manager::ManagerError, manager::Task)> = None;
    let _ = manager::Registry::new;
}

fn echo(x: u8) -> u8 {
    x
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Nothing;

impl mproc::Target for Nothing {
    fn run(self) {}
}
