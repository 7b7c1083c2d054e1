package dev.pglock.core.lease;

import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockInfo;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockLostException.Reason;
import dev.pglock.core.LockRequest;
import dev.pglock.core.TransactionLock;
import dev.pglock.core.internal.AbstractLockClient;
import dev.pglock.core.internal.Jdbc;
import dev.pglock.core.internal.LockSession;
import dev.pglock.core.internal.PlatformThreads;
import dev.pglock.core.internal.PermitKeys;
import dev.pglock.core.internal.SessionPool;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Timestamp;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Locks kept as rows of a lease table, renewed by heartbeats and expiring by the database clock.
 *
 * <p>Where a lock is taken: {@link #tryLockInDatabase} runs one statement, {@link #TRY_LOCK}. A
 * caller that waits ({@link #lockInDatabase}) tries again with {@link #WAITER_TRY_LOCK}, which
 * writes nothing when it fails, when a NOTIFY says the key was released or when the holder's lease
 * ends by the database clock, whichever comes first. Exclusive waiters of different clients queue in
 * the key's {@link WaitLine}, so that a release wakes the first of them only; other waiters (see
 * {@link Wait}) hear releases through their client's {@link LeaseListener}.
 *
 * <p>Every statement is a single autocommit statement on a pinned session, so the table works
 * through PgBouncer in transaction pooling; only the LISTEN connection and the wait lines (both from
 * the LISTEN DataSource) need a real session.
 */
final class LeaseLockClient extends AbstractLockClient<LeaseLock> {

    private static final Logger log = LoggerFactory.getLogger(LeaseLockClient.class);

    // %1$s is the table, %2$s its fencing sequence: both checked by Identifiers and quoted, since an
    // identifier cannot be a parameter. Every value is a parameter.
    //
    // Clock: every time is statement_timestamp(), the database's clock when the statement arrived. It
    // is one value for the whole statement (every CASE below agrees with every other), it is never
    // earlier than the client's send time (the trust the client derives from that time stays on the
    // safe side), and unlike now() it is not the start of an enclosing transaction: a statement that
    // ran late inside a long transaction would otherwise write a lease that ends before its holder
    // stops trusting it. Client clocks are never read, so they may be wrong by any amount.
    //
    // Holders: each entry of holders is one acquisition, "<owner>#<n>" (see holderOf), and every
    // heartbeat, release and data update names the entry of its own acquisition, never the owner
    // alone. A release that arrives late (a lease this client stopped trusting, a release the client
    // gave up on that the server still ran) therefore finds nothing to remove once the same client
    // holds the key again under a new entry. A join adds its entry and removes none, not even the
    // same client's older ones: each entry leaves the row only by its own release (or when the row's
    // lease ends). An older entry of this client is one it no longer trusts, whose release is on its
    // way: a lost hold's, held back until its holders were told (stripping it let the new entry's
    // release free the row before they had heard), a release that failed and is retried, or a grant
    // that may have been made unseen and is undone. Joining never strips a newer entry either (an
    // acquisition held up in the network that arrives after a newer one of the same client).
    //
    // Acquire, one statement: insert the row, or take over the existing one when its lease has ended
    // by the database clock (or join it, when both it and we are shared). ON CONFLICT takes the row
    // lock, so of two racing clients exactly one gets RETURNING a row. In the DO UPDATE branch the
    // token is drawn after that row lock, so it is larger than the token of every earlier holder.
    // That row lock waits for a transaction that holds the row: one that confirmed a lock joined to
    // it (see acquireInTransaction) holds it until its commit, however long. So the VALUES, computed
    // before the conflict is looked for, set a transaction-local lock_timeout (TRY_ROW_WAIT): the
    // attempt then ends as "taken" (55P03) instead of outwaiting the network timeout and failing as
    // a database error while its backend waits on in the server. Parameters: namespace, key, holder,
    // shared, lease ms, lease ms, data, lock_timeout.
    private static final String TRY_LOCK = """
            INSERT INTO %1$s AS t (namespace, lock_key, holders, shared, fencing_token, acquired_at, expires_at,
                                   lease_millis, data)
            VALUES (?, ?, ARRAY[?::text], ?, nextval(%2$s), statement_timestamp(),
                    statement_timestamp() + ? * interval '1 millisecond', ?,
                    (SELECT ?::bytea WHERE set_config('lock_timeout', ?, true) IS NOT NULL))
            ON CONFLICT (namespace, lock_key) DO UPDATE SET
                holders = CASE WHEN t.expires_at <= statement_timestamp() THEN EXCLUDED.holders
                               ELSE t.holders || EXCLUDED.holders END,
                shared = EXCLUDED.shared,
                fencing_token = nextval(%2$s),
                acquired_at = CASE WHEN t.expires_at <= statement_timestamp() THEN EXCLUDED.acquired_at
                                   ELSE t.acquired_at END,
                expires_at = CASE WHEN t.expires_at <= statement_timestamp() THEN EXCLUDED.expires_at
                                  ELSE greatest(t.expires_at, EXCLUDED.expires_at) END,
                lease_millis = EXCLUDED.lease_millis,
                record_version = t.record_version + 1,
                data = CASE WHEN t.expires_at <= statement_timestamp() THEN EXCLUDED.data
                            ELSE coalesce(EXCLUDED.data, t.data) END
            WHERE t.expires_at <= statement_timestamp() OR (t.shared AND EXCLUDED.shared)
            RETURNING fencing_token, (extract(epoch FROM statement_timestamp()) * 1000000)::bigint%3$s""";
    // TRY_LOCK for an exclusive request, where the CASEs above all take their first branch (the row is
    // only taken when expired): the same outcome, about 10 us less server time per acquisition on a
    // small VM, which is 3% of an uncontended acquire-release pair. Parameters: as TRY_LOCK.
    private static final String TRY_LOCK_EXCLUSIVE = """
            INSERT INTO %1$s AS t (namespace, lock_key, holders, shared, fencing_token, acquired_at, expires_at,
                                   lease_millis, data)
            VALUES (?, ?, ARRAY[?::text], ?, nextval(%2$s), statement_timestamp(),
                    statement_timestamp() + ? * interval '1 millisecond', ?,
                    (SELECT ?::bytea WHERE set_config('lock_timeout', ?, true) IS NOT NULL))
            ON CONFLICT (namespace, lock_key) DO UPDATE SET
                holders = EXCLUDED.holders,
                shared = EXCLUDED.shared,
                fencing_token = nextval(%2$s),
                acquired_at = EXCLUDED.acquired_at,
                expires_at = EXCLUDED.expires_at,
                lease_millis = EXCLUDED.lease_millis,
                record_version = t.record_version + 1,
                data = EXCLUDED.data
            WHERE t.expires_at <= statement_timestamp()
            RETURNING fencing_token, (extract(epoch FROM statement_timestamp()) * 1000000)::bigint%3$s""";
    // A waiter's attempt, after a NOTIFY or at the holder's lease end. TRY_LOCK is the cheaper
    // statement when the lock is free, but it locks the row even when it fails, and a row lock is WAL
    // that its commit must flush: every waiter woken by a release would pay a durable commit, one
    // after the other, before the one that can win does. Here the row is only locked when it is
    // ours to take, and a row another session has locked (a waiter of another client winning the
    // same release, a heartbeat) is skipped, not waited for: the waiters that lose read and go back
    // to sleep without writing or queueing behind the winner's commit. It also says how long the
    // holder's lease has left, by the database clock, so a waiter needs one statement per wake-up.
    // The row lock is taken before the token is drawn. Parameters: namespace, key, holder,
    // shared, lease ms, data. Rows: (token, now, NULL, false) when taken; (NULL, NULL, ms
    // left, busy) when not, busy meaning the row looked free but another session had it locked (it
    // is being taken: look again in a moment); none when the row appeared after this statement's
    // snapshot (try again at once).
    private static final String WAITER_TRY_LOCK = """
            WITH p AS (SELECT ?::text AS ns, ?::text AS k, ?::text AS me, ?::boolean AS sh,
                              ?::bigint AS lease, ?::bytea AS data, statement_timestamp() AS now),
            target AS (
                SELECT t.namespace, t.lock_key FROM %1$s AS t, p
                WHERE t.namespace = p.ns AND t.lock_key = p.k AND (t.expires_at <= p.now OR (t.shared AND p.sh))
                FOR UPDATE OF t SKIP LOCKED),
            claim AS (
                UPDATE %1$s AS t SET
                    holders = CASE WHEN t.expires_at <= p.now THEN ARRAY[p.me] ELSE t.holders || p.me END,
                    shared = p.sh,
                    fencing_token = nextval(%2$s),
                    acquired_at = CASE WHEN t.expires_at <= p.now THEN p.now ELSE t.acquired_at END,
                    expires_at = CASE WHEN t.expires_at <= p.now THEN p.now + p.lease * interval '1 millisecond'
                                      ELSE greatest(t.expires_at, p.now + p.lease * interval '1 millisecond') END,
                    lease_millis = p.lease,
                    record_version = t.record_version + 1,
                    data = CASE WHEN t.expires_at <= p.now THEN p.data ELSE coalesce(p.data, t.data) END
                FROM p, target
                WHERE t.namespace = target.namespace AND t.lock_key = target.lock_key
                  AND (t.expires_at <= p.now OR (t.shared AND p.sh))
                RETURNING t.fencing_token%3$s),
            created AS (
                INSERT INTO %1$s (namespace, lock_key, holders, shared, fencing_token, acquired_at, expires_at,
                                  lease_millis, data)
                SELECT p.ns, p.k, ARRAY[p.me], p.sh, nextval(%2$s), p.now,
                       p.now + p.lease * interval '1 millisecond', p.lease, p.data
                FROM p
                WHERE NOT EXISTS (SELECT FROM claim)
                  AND NOT EXISTS (SELECT FROM %1$s AS o WHERE o.namespace = p.ns AND o.lock_key = p.k)
                ON CONFLICT (namespace, lock_key) DO NOTHING
                RETURNING fencing_token%3$s)
            SELECT fencing_token, (SELECT (extract(epoch FROM now) * 1000000)::bigint FROM p), NULL::bigint, false FROM claim
            UNION ALL SELECT fencing_token, (SELECT (extract(epoch FROM now) * 1000000)::bigint FROM p), NULL, false
                FROM created
            UNION ALL SELECT NULL, NULL, ceil(extract(epoch FROM o.expires_at - p.now) * 1000)::bigint,
                             o.expires_at <= p.now OR (o.shared AND p.sh)
                FROM %1$s AS o, p
                WHERE o.namespace = p.ns AND o.lock_key = p.k AND NOT EXISTS (SELECT FROM claim)""";
    // Heartbeat, one statement for every lock this client holds: extends each lease by its own length
    // from the database's clock, only while that acquisition still holds it and it has not expired.
    // The acquisitions it does not return are no longer held. Rows are locked first in key order, as
    // RELEASE_ALL does, so clients renewing and releasing the same shared locks cannot deadlock: the
    // keys are sorted, and each is looked up (and locked) through the primary key in that order by
    // the lateral join. Both lookups go through the primary key, never a scan of the table: with a
    // plain join, PostgreSQL hashed the whole namespace for each statement (100,000 rows for a
    // statement renewing 5,000), which made a heartbeat of 100,000 locks take 0.72 s instead of
    // about half that. Parameters: keys, holders, leases (one entry per lock), namespace, namespace.
    private static final String HEARTBEAT = """
            WITH h AS (SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[]) AS h(lock_key, holder, lease_millis)),
            mine AS (
                SELECT t.lock_key, k.holder, k.lease_millis FROM (SELECT * FROM h ORDER BY lock_key) AS k
                CROSS JOIN LATERAL (
                    SELECT o.lock_key FROM %1$s AS o
                    WHERE o.namespace = ? AND o.lock_key = k.lock_key AND k.holder = ANY (o.holders)
                      AND o.expires_at > statement_timestamp()
                    FOR UPDATE) AS t)
            UPDATE %1$s AS t
            SET expires_at = greatest(t.expires_at, statement_timestamp() + mine.lease_millis * interval '1 millisecond'),
                record_version = t.record_version + 1
            FROM mine
            WHERE t.namespace = ? AND t.lock_key = ANY (ARRAY(SELECT lock_key FROM mine)) AND t.lock_key = mine.lock_key
              AND mine.holder = ANY (t.holders)
            RETURNING mine.holder%2$s""";
    // Heartbeat for exclusive locks: one UPDATE, without HEARTBEAT's pass that first locks the rows in
    // key order, which costs a second write (the row lock) and a second lookup of every row: a round
    // renewing 100,000 locks took 0.35 - 0.67 s instead of 0.76 - 1.28 s on a 2-core machine. Its rows are
    // locked in whatever order the plan produces. No deadlock comes of it as long as nothing holds
    // one of those rows while waiting for another, and:
    // - another client's statements either lock one row and hold nothing else while they wait for it
    //   (an acquisition's ON CONFLICT; a waiter's claim, which skips locked rows anyway), or lock only
    //   rows listing one of its own holders (its heartbeat, bulk release and confirmations), which a
    //   row only we hold does not;
    // - a transaction of ours confirms a lock only after registering it under rowOrder, which a round
    //   holds from before it lists its locks until its exclusive locks are renewed, so no round renews
    //   an exclusive row a transaction of ours holds (a shared one it may: see acquireInTransaction);
    // - RELEASE_ALL releases acquisitions no longer listed by rounds that start later (lost, released
    //   or, at close, all), and first waits for the round in flight to let go of rowOrder.
    // Left to PostgreSQL's deadlock detection, which fails one statement (a failed heartbeat leaves
    // its locks trusted until the margin, and the next round tries again): a cycle through two other
    // clients' multi-row statements on shared rows and a row one of them held until we took it over
    // after it expired, and a round still running after the network timeout, which RELEASE_ALL stops
    // waiting for. Shared locks, which other clients renew and release too, keep HEARTBEAT, run after
    // the round lets go of rowOrder. Parameters: keys, holders, leases, namespace.
    private static final String HEARTBEAT_EXCLUSIVE_MINE =
            "WITH mine AS (SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[]) AS h(lock_key, holder, lease_millis))";
    private static final String HEARTBEAT_EXCLUSIVE_UPDATE = """
            UPDATE %1$s AS t
            SET expires_at = greatest(t.expires_at, statement_timestamp() + mine.lease_millis * interval '1 millisecond'),
                record_version = t.record_version + 1
            FROM mine
            WHERE t.namespace = ? AND t.lock_key = ANY (ARRAY(SELECT lock_key FROM mine)) AND t.lock_key = mine.lock_key
              AND mine.holder = ANY (t.holders) AND t.expires_at > statement_timestamp()""";
    private static final String HEARTBEAT_EXCLUSIVE = HEARTBEAT_EXCLUSIVE_MINE + "\n" + HEARTBEAT_EXCLUSIVE_UPDATE
            + "\nRETURNING mine.holder%2$s";
    // HEARTBEAT_EXCLUSIVE answering how many it renewed, in one row, instead of a row for each: a
    // statement's keys are distinct (one acquisition per key and client) and its holders name one
    // acquisition each, so each entry renews at most one row, and the count says whether all were
    // renewed. Only when some were not does HEARTBEAT_EXCLUSIVE run after it to say which: it renews
    // the same rows again and finds the same ones gone (a holder never comes back to a row, and an
    // expired row stays expired for it). Reading 5,000 rows back cost a round of 100,000 locks about
    // 7 % on a 2-core machine. Parameters as HEARTBEAT_EXCLUSIVE's. Column: how many were renewed.
    private static final String HEARTBEAT_EXCLUSIVE_COUNT = HEARTBEAT_EXCLUSIVE_MINE + ",\nrenewed AS ("
            + HEARTBEAT_EXCLUSIVE_UPDATE + "\nRETURNING 1)\nSELECT count(*)%2$s FROM renewed";
    // Release: leave the holders. When we were the last, the lock ends now, or at acquired_at +
    // holdAtLeast when that is still ahead (database clock): the row then lists no holder, so no
    // heartbeat can extend it. The row stays (empty) so the next acquisition continues its fencing
    // tokens; old rows are purged. NOTIFY goes out when the statement commits, so a waiter wakes in
    // the same round trip, and only when someone waits for the key (see LeaseListener: NOTIFY
    // serialises commits, so a release nobody waits for does not send one). Parameters: holder,
    // holder, hold-at-least ms, holder, namespace, key, holder, waiter id, channel. (A plain single-row UPDATE: the join RELEASE_ALL needs costs about 13% per release.)
    // %2$s is empty, or ASYNC_COMMIT when the user opted in to releases that do not wait for the flush.
    private static final String RELEASE = """
            UPDATE %1$s AS t
            SET holders = array_remove(t.holders, ?::text),
                expires_at = CASE WHEN t.holders <> ARRAY[?::text] THEN t.expires_at
                                  ELSE greatest(statement_timestamp(), t.acquired_at + ? * interval '1 millisecond') END,
                data = CASE WHEN t.holders = ARRAY[?::text] THEN NULL ELSE t.data END
            WHERE t.namespace = ? AND t.lock_key = ? AND ?::text = ANY (t.holders)
            RETURNING CASE WHEN pg_try_advisory_xact_lock(?) THEN NULL ELSE pg_notify(?, t.lock_key) END%2$s""";
    // RELEASE for an exclusive lock: its row lists this acquisition alone. Parameters: hold-at-least
    // ms, namespace, key, holder, waiter id, channel.
    private static final String RELEASE_EXCLUSIVE = """
            UPDATE %1$s AS t
            SET holders = '{}', expires_at = greatest(statement_timestamp(), t.acquired_at + ? * interval '1 millisecond'),
                data = NULL
            WHERE t.namespace = ? AND t.lock_key = ? AND t.holders = ARRAY[?::text]
            RETURNING CASE WHEN pg_try_advisory_xact_lock(?) THEN NULL ELSE pg_notify(?, t.lock_key) END%2$s""";
    // The same for several locks at once (close(), and leases this client stopped trusting), each by
    // its own acquisition's entry. The rows are locked first, in key order, like HEARTBEAT's: two
    // statements that lock the same rows in different orders can deadlock. Parameters: keys,
    // holders, hold-at-least ms, waiter ids (one entry per lock), namespace, namespace, channel.
    // Like HEARTBEAT's, both lookups go through the primary key (a plain join hashed the namespace).
    // Entries are grouped by key: a shared row can list two of this client's (a lost acquisition whose
    // release is still to be made, and a re-join, see TRY_LOCK), and an UPDATE ... FROM applies only
    // one joined row to each target row, so one entry per key and statement left the row and the
    // other stayed, counted as released. A row that lists nobody else afterwards ends as RELEASE's
    // does, at the longest hold-at-least of the entries this statement removed (not of one that had
    // already left it, say when the row was taken afresh after its lease ended); two entries of a key
    // released by two statements (batches of RELEASE_BATCH) end it at the later one's, as two
    // RELEASEs would. One row returned per key.
    private static final String RELEASE_ALL = """
            WITH r AS (SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[])
                       AS r(lock_key, holder, hold_millis, waiter_id, keep_until)),
            mine AS (
                SELECT t.lock_key, k.holders, k.holds, k.keeps, k.waiter_id
                FROM (SELECT lock_key, array_agg(holder) AS holders, array_agg(hold_millis) AS holds,
                             array_agg(keep_until) AS keeps, min(waiter_id) AS waiter_id
                      FROM r GROUP BY lock_key ORDER BY lock_key) AS k
                CROSS JOIN LATERAL (
                    SELECT o.lock_key FROM %1$s AS o
                    WHERE o.namespace = ? AND o.lock_key = k.lock_key AND o.holders && k.holders
                    FOR UPDATE) AS t)
            UPDATE %1$s AS t
            SET holders = ARRAY(SELECT h.holder FROM unnest(t.holders) WITH ORDINALITY AS h(holder, n)
                                WHERE h.holder <> ALL (mine.holders) ORDER BY h.n),
                expires_at = CASE WHEN NOT t.holders <@ mine.holders THEN t.expires_at
                                  ELSE greatest(statement_timestamp(), t.acquired_at
                                       + (SELECT max(h.millis) FROM unnest(mine.holders, mine.holds) AS h(holder, millis)
                                          WHERE h.holder = ANY (t.holders)) * interval '1 millisecond',
                                       (SELECT to_timestamp(max(h.until) / 1000000.0)
                                        FROM unnest(mine.holders, mine.keeps) AS h(holder, until)
                                        WHERE h.holder = ANY (t.holders))) END,
                data = CASE WHEN t.holders <@ mine.holders THEN NULL ELSE t.data END
            FROM mine
            WHERE t.namespace = ? AND t.lock_key = ANY (ARRAY(SELECT lock_key FROM mine)) AND t.lock_key = mine.lock_key
              AND t.holders && mine.holders
            RETURNING CASE WHEN pg_try_advisory_xact_lock(mine.waiter_id) THEN NULL ELSE pg_notify(?, t.lock_key) END%2$s""";
    // An operator's force-release: the row is freed whoever holds it, hold-at-least included, and
    // every waiter is woken. Its holders find out at their next heartbeat (taken over). Only the
    // acquisition that was read (its fencing token): a holder that took the key in between is not
    // freed unseen. Parameters: namespace, key, fencing token, channel.
    private static final String FORCE_RELEASE = """
            UPDATE %1$s AS t SET holders = '{}', expires_at = statement_timestamp(), data = NULL
            WHERE t.namespace = ? AND t.lock_key = ? AND t.fencing_token = ?
              AND (t.holders <> '{}' OR t.expires_at > statement_timestamp())
            RETURNING pg_notify(?, t.lock_key)""";
    // Opt-in (asyncReleaseCommit): the release's transaction commits without waiting for its WAL to
    // reach disk; set for that transaction only (is_local), so it never leaks into the session, and
    // evaluated for the rows released, before the commit that reads it. Only releases: a lost release
    // keeps a lock taken until its lease ends, which never lets two holders in, whereas a lost
    // acquisition or heartbeat would. Every later durable commit (the next acquisition) flushes it.
    private static final String ASYNC_COMMIT = ", set_config('synchronous_commit', 'off', true)";
    // Appended to what acquisitions and heartbeats return (%3$s of the TRY_LOCKs, %2$s of the
    // HEARTBEATs): where the transaction's synchronous_commit is off (a role's or database's setting, a
    // URL option, a SET left on a pooled connection or on a pooler's server session), it commits
    // waiting for the flush all the same, that transaction only. Otherwise a crash could lose an
    // acquisition or a renewal its holder saw confirmed, and another client take the key while the
    // holder still trusted its lease. Read in each statement, since the setting can differ from one
    // connection, or one transaction behind a pooler, to the next. An uncorrelated subquery: run once
    // per statement, when its first row is returned, so a statement that takes nothing writes nothing
    // and sets nothing; a stronger setting (remote_apply) is kept. Releases keep the setting: a lost
    // release only keeps a lock taken until its lease ends.
    private static final String DURABLE_COMMIT = ", (SELECT set_config('synchronous_commit', 'on', true)"
            + " WHERE current_setting('synchronous_commit') = 'off')";
    // Replace a held lock's data, only while this acquisition holds it and it has not expired.
    private static final String UPDATE_DATA = """
            UPDATE %1$s SET data = ?
            WHERE namespace = ? AND lock_key = ? AND ? = ANY (holders) AND expires_at > statement_timestamp()""";
    // A transaction lock's confirmation, run inside that transaction just before it commits: extends
    // the lease from the database clock, only while this acquisition holds it and it has not expired.
    // The row lock it takes lasts until the transaction ends, so no takeover can slip in before the
    // commit (a taker waits, then finds the lease extended). Parameters: lease ms, namespace, key, holder.
    private static final String CONFIRM_IN_TRANSACTION = """
            UPDATE %1$s SET expires_at = greatest(expires_at, statement_timestamp() + ? * interval '1 millisecond'),
                record_version = record_version + 1
            WHERE namespace = ? AND lock_key = ? AND ? = ANY (holders) AND expires_at > statement_timestamp()""";
    // Every lock in the table that someone holds, or that hold-at-least keeps taken.
    private static final String LOCK_COLUMNS = """
            SELECT namespace, lock_key, holders, shared, fencing_token, acquired_at, expires_at, data
            FROM %1$s WHERE expires_at > statement_timestamp()""";
    private static final String GET = LOCK_COLUMNS + " AND namespace = ? AND lock_key = ?";
    private static final String LIST = LOCK_COLUMNS + " ORDER BY namespace, lock_key";
    // A semaphore's permits and its markers (see PermitKeys): keys that start with the semaphore's key
    // and a prefix user keys cannot contain. Parameters: namespace, prefix.
    private static final String PERMITS = LOCK_COLUMNS + " AND namespace = ? AND starts_with(lock_key, ?) ORDER BY lock_key";
    // A marker counts while it is taken: held, or kept by close() for a permit that hold-at-least
    // keeps taken (holders empty, expires_at ahead; a marker released otherwise ends at its release's
    // statement time, as markers carry no hold-at-least of their own). A caller asking for the same
    // number of permits joins a kept marker as it joins a held one (TRY_LOCK's shared branch).
    private static final String SEMAPHORE_SIZES = "SELECT lock_key FROM %1$s WHERE namespace = ? AND starts_with(lock_key, ?)"
            + " AND expires_at > statement_timestamp()";
    // Rows released or expired long ago: a stalled acquirer an hour late is not a concern.
    private static final String PURGE = "DELETE FROM %1$s WHERE expires_at < statement_timestamp() - interval '1 hour'";
    private static final Duration PURGE_EVERY = Duration.ofMinutes(10);
    private static final Duration MIN_NETWORK_TIMEOUT = Duration.ofSeconds(2);
    /** How long a waiter that found the key being taken by another session waits before it looks again. */
    private static final long BUSY_BACKOFF_MILLIS = 20;
    private static final long BUSY_BACKOFF_MAX_MILLIS = 100;
    /** How long no line is opened, at most and at least, after a borrow for one ran out (see {@link #linesPaused}). */
    private static final long LINES_PAUSE_NANOS = TimeUnit.SECONDS.toNanos(5);
    private static final long LINES_PAUSE_MIN_NANOS = TimeUnit.SECONDS.toNanos(1);

    private final String namespace;
    private final Duration defaultLease;
    private final Duration heartbeatInterval;
    // Every lease must be longer (validate(), at each call): computed once, as Duration.multipliedBy
    // goes through BigDecimal.
    private final Duration twoHeartbeats;
    private final Duration safetyMargin;
    private final String channel;
    // The statements: built with the names as configured, then again by start() with the names
    // schema-qualified (see useNames); volatile, as they are written after construction.
    private volatile String tryLock;
    private volatile String tryLockExclusive;
    private volatile String waiterTryLock;
    private volatile String heartbeat;
    private volatile String heartbeatExclusive;
    private volatile String heartbeatExclusiveCount;
    /**
     * Held by a heartbeat round from before it lists its locks until its exclusive locks are renewed,
     * and by a transaction's confirmation while it registers its lock; RELEASE_ALL waits for a round
     * holding it to let go (see HEARTBEAT_EXCLUSIVE).
     */
    private final java.util.concurrent.locks.ReentrantLock rowOrder = new java.util.concurrent.locks.ReentrantLock();
    private volatile String release;
    private volatile String releaseExclusive;
    private volatile String forceRelease;
    private volatile String releaseAll;
    private volatile String updateData;
    private volatile String confirmInTransaction;
    private volatile String get;
    private volatile String list;
    private volatile String permits;
    private volatile String semaphoreSizes;
    private volatile String purge;
    private final LeaseSchema schema;
    private final SessionPool sessions;
    private final LeaseListener listener;
    private final DataSource listenDataSource;
    private final Duration connectionWaitTimeout;
    /** Where the sessions come from; after close(), a late release borrows from it directly. */
    private final DataSource dataSource;
    /** Set once close() has given its sessions back and stopped its threads (see releaseAfterClose). */
    private volatile boolean databaseClosed;
    /** Wait lines callers are in now (or leaving); {@link #lineSlots} bounds how many. */
    private final Set<WaitLine> lines = ConcurrentHashMap.newKeySet();
    /**
     * One permit per caller that may wait in a {@link WaitLine} at once (the builder's waitLines),
     * each on its own connection of the LISTEN DataSource; the others, and callers of shared locks,
     * wait through the one LISTEN connection, where every release of a key wakes every client waiting
     * for it.
     */
    private final java.util.concurrent.Semaphore lineSlots;
    /** Set once a line's session was found moved by a pooler: callers wait through the LISTEN connection only. */
    private volatile boolean linesOff;
    /** When no line is opened because a borrow for one ran out: see {@link #linesPaused}; one value, never two mixed. */
    private volatile LinesPause linesPause = new LinesPause(CompletableFuture.completedFuture(null), System.nanoTime(),
            System.nanoTime());
    private final ExecutorService connector;
    private final AtomicBoolean heartbeatRunning = new AtomicBoolean();
    /**
     * Locks whose row a transaction holds since it confirmed them, with how many such transactions
     * have not ended yet (shared locks: several): heartbeats leave them alone meanwhile. Each
     * confirming transaction lock takes its count back when it is released, after its transaction;
     * the acquisition may go on (another hold of this client keeps it), renewed again from then on.
     */
    private final Map<LeaseLock, Integer> confirmedInTransactions = new ConcurrentHashMap<>();
    /** Numbers this client's acquisitions: each one's holder entry is {@code owner#n}. */
    private final AtomicLong acquisitions = new AtomicLong();
    /** {@code owner#}: every holder entry of this client starts with it. */
    private final String holderPrefix;
    /** Hashes (channel, namespace, key) to the id of the key's wait line; see {@link #lineLockId}. */
    /** Set by start(), from the table's resolved, schema-qualified name (see LeaseSchema.qualifiedNames). */
    private volatile dev.pglock.core.advisory.AdvisoryKeyHasher lineIds;
    private final Duration networkTimeout;
    /** TRY_LOCK's lock_timeout, in ms as text: {@link #TRY_ROW_WAIT}, at most half the network timeout. */
    private final String tryRowWait;
    /**
     * How long an acquiring statement waits for the row lock of another transaction. Other pglock
     * statements hold a row for milliseconds; a transaction that confirmed a lock in it holds the row,
     * and so the lock, until its commit.
     */
    static final Duration TRY_ROW_WAIT = Duration.ofSeconds(1);
    private static final String LOCK_TIMEOUT = "55P03";
    /** What a release's statement adds for an asynchronous commit, or nothing. */
    private final String releaseCommit;
    /** How long a session beyond the first stays open with nothing to run: max(heartbeat, 1 s). */
    private final long idleNanos;
    /** Where releases of leases this client stopped trusting run; a test may hold them back. */
    volatile Executor untrustedReleases;
    /** Releases still to make (failed ones, and acquisitions that may have been granted unseen): see retryReleases. */
    private final Map<LeaseLock, PendingRelease> pendingReleases = new ConcurrentHashMap<>();
    /** Whether a retryReleases runs or is due; retryAgain: entries were added meanwhile. */
    private final java.util.concurrent.atomic.AtomicBoolean retrying = new java.util.concurrent.atomic.AtomicBoolean();
    private volatile boolean retryAgain;
    /** For tests: runs in retryReleases after its last look at what is pending, before it stops. */
    volatile Runnable beforeRetryStopsForTests;
    /** For tests: runs in scheduleRetry when a retry was found running or due. */
    volatile Runnable afterRetryFoundBusyForTests;
    /** For tests: runs in a heartbeat round once it has listed the locks to renew, before any statement. */
    volatile Runnable heartbeatListedForTests;
    /** For tests: runs in a heartbeat round that found locks gone, before it reports them lost. */
    volatile Runnable beforeGoneReportedForTests;
    private static final String FOUND_GONE = "its row was taken over, released or deleted by someone else (the heartbeat"
            + " found it gone)";
    /** For tests: how long a caller behind the first in a wait line waits before it attempts again. */
    volatile long lineRecheckMillisForTests = WaitLine.RECHECK_MILLIS;
    /** For tests: while true, no heartbeat is sent, as when the process is paused or the network slow. */
    volatile boolean heartbeatsPausedForTests;
    /** For tests: while true, the timer that declares untrusted leases lost does not run either. */
    volatile boolean trustChecksPausedForTests;
    /** Added to the time retryReleases reads, to pass every retry deadline. */
    volatile long retryClockOffsetNanosForTests;

    LeaseLockClient(DataSource dataSource, DataSource listenDataSource, String namespace, String table,
            String quotedTable, String quotedSequence, boolean initializeSchema, Duration defaultLease,
            Duration heartbeatInterval, int lockSessions, int waitLines, Duration connectionWaitTimeout,
            boolean asyncReleaseCommit, String owner) {
        super(owner, "pglock-lease");
        this.dataSource = dataSource;
        this.namespace = namespace;
        this.defaultLease = defaultLease;
        this.heartbeatInterval = heartbeatInterval;
        this.twoHeartbeats = heartbeatInterval.multipliedBy(2);
        this.safetyMargin = heartbeatInterval.dividedBy(2);
        // A NOTIFY channel is at most 63 bytes: the table's own name (≤ 51) fits. Tables of the same
        // name in two schemas share it, which only wakes a waiter to re-check for nothing; their
        // wait lines and waiter ids are their own (start()).
        this.channel = table.substring(table.indexOf('.') + 1);
        this.releaseCommit = asyncReleaseCommit ? ASYNC_COMMIT : "";
        useNames(quotedTable, quotedSequence);
        this.schema = new LeaseSchema(table, quotedTable, quotedSequence, initializeSchema);
        this.connector = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "pglock-lease-io");
            t.setDaemon(true);
            return t;
        });
        // Lease statements are short (waiting happens here, not in the server): a server that stops
        // answering fails them within two heartbeats, so a stuck socket cannot hold a session long.
        Duration networkTimeout = heartbeatInterval.multipliedBy(2);
        networkTimeout = networkTimeout.compareTo(MIN_NETWORK_TIMEOUT) < 0 ? MIN_NETWORK_TIMEOUT : networkTimeout;
        networkTimeout = networkTimeout.compareTo(defaultLease) > 0 ? defaultLease : networkTimeout;
        this.networkTimeout = networkTimeout;
        this.tryRowWait = Long.toString(Math.max(1, Math.min(TRY_ROW_WAIT.toMillis(), networkTimeout.toMillis() / 2)));
        this.idleNanos = Math.max(heartbeatInterval.toNanos(), TimeUnit.SECONDS.toNanos(1));
        this.sessions = new SessionPool(dataSource, lockSessions, connectionWaitTimeout, networkTimeout, connector,
                LockSession::withPid);
        this.untrustedReleases = connector;
        this.holderPrefix = owner + "#";
        this.listener = new LeaseListener(listenDataSource, connectionWaitTimeout, connector, channel, namespace,
                this::wakeListener);
        this.listenDataSource = listenDataSource;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.lineSlots = new java.util.concurrent.Semaphore(waitLines);
    }

    /**
     * The statements, on the table and sequence of these (quoted) names. Called again by start() with
     * the names schema-qualified, before any statement runs and any thread of this client starts.
     */
    private void useNames(String quotedTable, String quotedSequenceName) {
        // The sequence is named by a string literal (nextval(E'...')): a quote or a backslash in a
        // schema name that search_path resolved must not end it, whatever standard_conforming_strings says.
        String quotedSequence = "E'" + quotedSequenceName.replace("\\", "\\\\").replace("'", "\\'") + "'";
        this.tryLock = TRY_LOCK.formatted(quotedTable, quotedSequence, DURABLE_COMMIT);
        this.tryLockExclusive = TRY_LOCK_EXCLUSIVE.formatted(quotedTable, quotedSequence, DURABLE_COMMIT);
        this.waiterTryLock = WAITER_TRY_LOCK.formatted(quotedTable, quotedSequence, DURABLE_COMMIT);
        this.heartbeat = HEARTBEAT.formatted(quotedTable, DURABLE_COMMIT);
        this.heartbeatExclusive = HEARTBEAT_EXCLUSIVE.formatted(quotedTable, DURABLE_COMMIT);
        this.heartbeatExclusiveCount = HEARTBEAT_EXCLUSIVE_COUNT.formatted(quotedTable, DURABLE_COMMIT);
        this.release = RELEASE.formatted(quotedTable, releaseCommit);
        this.releaseExclusive = RELEASE_EXCLUSIVE.formatted(quotedTable, releaseCommit);
        this.releaseAll = RELEASE_ALL.formatted(quotedTable, releaseCommit);
        this.updateData = UPDATE_DATA.formatted(quotedTable);
        this.confirmInTransaction = CONFIRM_IN_TRANSACTION.formatted(quotedTable);
        this.get = GET.formatted(quotedTable);
        this.forceRelease = FORCE_RELEASE.formatted(quotedTable);
        this.list = LIST.formatted(quotedTable);
        this.permits = PERMITS.formatted(quotedTable);
        this.semaphoreSizes = SEMAPHORE_SIZES.formatted(quotedTable);
        this.purge = PURGE.formatted(quotedTable);
    }

    /** Opens the first session (checking it is PostgreSQL), creates or checks the table, starts the heartbeat. */
    void start() {
        LockSession first = sessions.start();
        String resolved;
        try {
            first.call(schema::prepare);
            // From here on the table and sequence the first session found, whatever another connection's
            // search_path would find (one an application left with SET search_path, a tenant's schema
            // with a table of the same name): every statement names them with their schema.
            String[] qualified = first.call(schema::qualifiedNames);
            useNames(qualified[0], qualified[1]);
            resolved = qualified[0];
        } catch (SQLException e) {
            throw new LockDatabaseException("cannot prepare the lease table " + channel + ": " + e.getMessage(), e);
        }
        // Every client of one table, whatever name it was given, orders its waiters and tells its
        // releases that someone waits with the same ids; clients of another table never share them.
        lineIds = new dev.pglock.core.advisory.AdvisoryKeyHasher("pglock-lease-lines/" + resolved);
        listener.identifyTable(resolved);
        every(heartbeatInterval, "the heartbeat", this::startHeartbeat);
        // Trust is checked four times per heartbeat, so a lock is declared lost at most a quarter
        // heartbeat after its trusted time, which the margin (half a heartbeat) keeps before expiry.
        every(heartbeatInterval.dividedBy(4), "the lease trust check", this::checkTrust);
        every(PURGE_EVERY, "purging old rows", () -> connector.execute(this::purge));
    }

    @Override
    public LockMode mode() {
        return LockMode.LEASE;
    }

    @Override
    protected Duration inFlightBound() {
        return networkTimeout;
    }

    @Override
    protected Optional<Duration> leaseOf(LeaseLock lock) {
        return Optional.of(Duration.ofMillis(lock.leaseMillis));
    }

    /**
     * Ends the LISTEN connection's poll, so it takes a new waiter's registration at once: an empty
     * notification on the channel (every listener ignores it). Sent once per key a client starts
     * waiting for that it has not waited for in the last few seconds.
     */
    private void wakeListener() {
        LockSession session = null;
        try {
            session = sessions.session();
            session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement("SELECT pg_notify(?, '')")) {
                    ps.setString(1, channel);
                    ps.execute();
                }
                return null;
            });
        } catch (SQLException | RuntimeException e) {
            if (session != null && e instanceof SQLException sql) {
                failure(session, "waking the LISTEN connection", sql);
            }
            log.debug("waking the LISTEN connection failed; it takes the registration within 0.5 s: {}",
                    e.getMessage());
        }
    }

    /** For tests: the waiter id a release of {@code key} checks before it notifies (see LeaseListener). */
    long waiterLockId(String key) {
        return listener.waiterLockId(key);
    }

    /** The id of the session-level advisory lock that orders the clients waiting for {@code key}; see {@link WaitLine}. */
    long lineLockId(String key) {
        return lineIds.lockId(namespace.length() + ":" + namespace + key);
    }

    /** For tests: whether a line's session was found moved by a pooler, so callers no longer wait in lines. */
    boolean waitLinesOff() {
        return linesOff;
    }

    /**
     * Whether callers wait through the LISTEN connection now because a line's connection did not come
     * in time: until that borrow's connection came back to the pool, {@link #LINES_PAUSE_NANOS} at most.
     */
    boolean linesPaused() {
        LinesPause pause = linesPause;
        long now = System.nanoTime();
        return now - pause.notBefore() < 0 || !pause.cameBack().isDone() && now - pause.until() < 0;
    }

    /** A pause of the lines: ends when {@code cameBack} completes but not before {@code notBefore}, or at {@code until}. */
    private record LinesPause(CompletableFuture<?> cameBack, long notBefore, long until) {
    }

    /** For tests: whether the LISTEN connection listens now. */
    boolean listenerListens() {
        return listener.listens();
    }

    /** For tests: runs on the listener thread just before it listens again for a new waiter. */
    void beforeListeningAgainForTests(Runnable hook) {
        listener.beforeListeningAgainForTests = hook;
    }

    /** How many waiters the LISTEN connection serves now (for tests). */
    int listenerWaiters() {
        return listener.waiterCount();
    }

    /** A new acquisition's entry in the holders column: this client's owner and a number of its own. */
    private String newHolder() {
        return holderPrefix + acquisitions.incrementAndGet();
    }

    /** The owner of a holder entry (the entry less its {@code #n}), as LockInfo shows it. */
    static String ownerOf(String holder) {
        int hash = holder.lastIndexOf('#');
        return hash < 0 ? holder : holder.substring(0, hash);
    }

    @Override
    protected void validate(LockRequest request) {
        Duration lease = request.lease().orElse(defaultLease);
        if (lease.compareTo(dev.pglock.core.internal.Durations.LONGEST) > 0) {
            throw new IllegalArgumentException("leaseFor (" + lease + ") must be at most "
                    + dev.pglock.core.internal.Durations.LONGEST + " (about 73 years, the longest span this client's"
                    + " clock counts) for key '" + request.key() + "'");
        }
        if (lease.compareTo(twoHeartbeats) <= 0) {
            throw new IllegalArgumentException("leaseFor (" + lease + ") must be longer than twice the heartbeat"
                    + " interval (" + heartbeatInterval + ") for key '" + request.key() + "'");
        }
        if (request.holdAtLeast().compareTo(lease) > 0) {
            throw new IllegalArgumentException("holdAtLeast (" + request.holdAtLeast() + ") must not be longer than"
                    + " the lease (" + lease + ") for key '" + request.key() + "'");
        }
    }

    @Override
    protected Optional<TransactionLock> acquireInTransaction(Connection transaction, LockRequest request) {
        try {
            if (transaction.isReadOnly()) {
                throw new IllegalStateException("lease lock '" + request.key() + "' was asked for in a read-only"
                        + " transaction: it is confirmed by an UPDATE inside the transaction before the commit."
                        + " Use a read-write transaction, or a lock around the transaction");
            }
        } catch (SQLException e) {
            throw new LockDatabaseException("cannot use the transaction's connection for lock '" + request.key()
                    + "': " + e.getMessage(), e);
        }
        return confirmedInTransaction(request, lock -> {
            // Registered before the confirmation locks the row: no heartbeat round lists it from here
            // on, and one that did has renewed its exclusive locks (within its own timeouts), so no
            // round waits for this transaction's exclusive rows. A shared lock's round may still be
            // about to renew it (shared locks are renewed after rowOrder is let go, as other clients'
            // transactions can hold them up): that round waits for this transaction, a wait
            // PostgreSQL sees, as it was before exclusive locks had a statement of their own.
            try {
                rowOrder.lockInterruptibly();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new LockDatabaseException("confirming lock '" + lock.key() + "' in the transaction was"
                        + " interrupted", e);
            }
            try {
                confirmedInTransactions.merge(lock, 1, Integer::sum); // more than 1: other transactions too (shared)
            } finally {
                rowOrder.unlock();
            }
            boolean confirmed = false;
            try (PreparedStatement ps = transaction.prepareStatement(confirmInTransaction)) {
                ps.setLong(1, lock.leaseMillis);
                ps.setString(2, namespace);
                ps.setString(3, lock.key());
                ps.setString(4, lock.holder);
                if (ps.executeUpdate() == 1) {
                    // The transaction now holds the row until it ends: heartbeats leave this lock alone
                    // meanwhile (they would wait for the commit, holding up every other lock's renewal).
                    // The confirmation renewed the lease in the row, but only if the transaction
                    // commits (a rollback, to a savepoint too, or a backend ended under it undoes it),
                    // so the client's trust stays what the last heartbeat gave; when the transaction
                    // lock is released, the lock is renewed (see transactionEnded). A transaction that
                    // runs longer than that trust has left loses the lock: the cautious side.
                    confirmed = true;
                    return null;
                }
                return "its lease was no longer this holder's when the transaction was about to commit"
                        + " (expired, or taken over)";
            } catch (SQLException e) {
                throw new LockDatabaseException("confirming lock '" + lock.key() + "' in the transaction failed: "
                        + e.getMessage(), e);
            } finally {
                if (!confirmed) {
                    unregister(lock);
                }
            }
        }, this::transactionEnded);
    }

    /** A confirmation's transaction has ended, or it failed: heartbeats renew the lock again unless another runs. */
    private void unregister(LeaseLock lock) {
        confirmedInTransactions.computeIfPresent(lock, (l, running) -> running == 1 ? null : running - 1);
    }

    /**
     * A transaction that confirmed {@code lock} has ended (its transaction lock is released after it).
     * When the acquisition goes on (another hold of this client keeps it), the lock is renewed now,
     * off the caller's thread (another transaction may hold the row), from the row as the transaction
     * left it: its rounds skipped it while the transaction ran, and transactions that confirm it back
     * to back would otherwise keep it from ever being renewed.
     */
    private void transactionEnded(LeaseLock lock) {
        unregister(lock);
        if (lock.ended || isClosed()) {
            return;
        }
        try {
            connector.execute(() -> {
                if (lock.ended || isClosed()) {
                    return;
                }
                Set<LeaseLock> gone = java.util.Collections.synchronizedSet(
                        java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>()));
                renew(List.of(lock), new java.util.concurrent.atomic.AtomicReference<>(), gone);
                if (!gone.isEmpty() && !lock.ended) {
                    lost(gone::contains, Reason.TAKEN_OVER, "its row was taken over, released or deleted by someone"
                            + " else (the renewal after a transaction that confirmed it found it gone)", null);
                }
            });
        } catch (RejectedExecutionException closing) {
            // the client is closing: it releases the lock itself
        }
    }

    @Override
    protected boolean isTrusted(LeaseLock lock) {
        // A heartbeat that found its row gone reports it when its round ends, after the round's other
        // statements: from the finding on, another client may hold the key.
        return !lock.foundGone && withinTrust(lock);
    }

    private static boolean withinTrust(LeaseLock lock) {
        return withinTrust(lock, System.nanoTime(), wallMillis());
    }

    /** {@link #withinTrust(LeaseLock)} at the given readings of both clocks. */
    private static boolean withinTrust(LeaseLock lock, long nowNanos, long nowWallMillis) {
        return nowNanos - lock.trustedUntilNanos < 0 && nowWallMillis < lock.trustedUntilWallMillis;
    }

    /** For tests: added to the wall clock, as a suspend of the machine moves it and not the monotonic one. */
    static volatile long wallClockOffsetMillisForTests;

    private static long wallMillis() {
        return System.currentTimeMillis() + wallClockOffsetMillisForTests;
    }

    /** Heartbeats that failed made the lease untrusted; else it simply was not confirmed in time (a pause). */
    @Override
    protected Reason untrustedCategory(LeaseLock lock) {
        // A round that failed, or one still in flight when trust ran out (a database that stopped
        // answering holds it up to the network timeout), is a failing heartbeat; else it simply did
        // not run in time (a paused process).
        if (lock.foundGone && withinTrust(lock)) {
            return Reason.TAKEN_OVER;
        }
        return heartbeatFailure != null || heartbeatRunning.get() ? Reason.HEARTBEAT_FAILED : Reason.TRUST_EXPIRED;
    }

    @Override
    protected int lockSessionsOpen() {
        return sessions.live().size();
    }

    @Override
    protected int waitingConnections() {
        return listener.connections() + lines.size();
    }

    @Override
    protected long lastCheckNanos() {
        return lastHeartbeatNanos;
    }

    /**
     * The heartbeat not running for three intervals (a round stuck, or the client's threads starved),
     * failing while locks are held, or the LISTEN connection down while callers wait.
     */
    @Override
    protected String problem() {
        long idle = System.nanoTime() - lastRoundNanos;
        if (idle > heartbeatInterval.toNanos() * 3) {
            return "the heartbeat has not run for " + Duration.ofNanos(idle).toMillis() + " ms (it runs every "
                    + heartbeatInterval + "): held locks are not being renewed";
        }
        String failed = heartbeatFailure;
        if (failed != null && !heldLocks().isEmpty()) {
            return "the heartbeat failed (" + failed + "); held locks stay trusted only until their lease minus "
                    + safetyMargin;
        }
        return listener.problem();
    }

    @Override
    protected String probeProblem() {
        return Jdbc.pingIdle(sessions.live());
    }

    @Override
    protected String untrustedReason(LeaseLock lock) {
        if (lock.foundGone && withinTrust(lock)) {
            return FOUND_GONE;
        }
        return "no heartbeat was confirmed within the lease minus a safety margin of " + safetyMargin
                + "; the database may let another holder take it soon";
    }

    @Override
    protected LeaseLock tryLockInDatabase(LockRequest request) {
        long leaseMillis = request.lease().orElse(defaultLease).toMillis();
        byte[] data = request.data();
        LockSession session = sessions.session();
        String holder = newHolder();
        long sentAt = System.nanoTime();
        long sentWall = wallMillis(); // read with sentAt: a suspend while the statement runs must count
        try {
            return session.callClaimed(c -> {
                refuseIfClosed(request);
                { // kept open on the session: see LockSession.prepared
                    PreparedStatement ps = session.prepared(request.isShared() ? tryLock : tryLockExclusive);
                    ps.setString(1, namespace);
                    ps.setString(2, request.key());
                    ps.setString(3, holder);
                    ps.setBoolean(4, request.isShared());
                    ps.setLong(5, leaseMillis);
                    ps.setLong(6, leaseMillis);
                    ps.setBytes(7, data);
                    ps.setString(8, tryRowWait);
                    try (ResultSet rs = ps.executeQuery()) {
                        if (!rs.next()) {
                            return null;
                        }
                        return granted(request, holder, rs.getLong(1), rs.getLong(2), leaseMillis, sentAt, sentWall);
                    }
                }
            });
        } catch (SQLException e) {
            if (LOCK_TIMEOUT.equals(e.getSQLState())) {
                // The row is held by a transaction (a lock confirmed in it, until its commit): taken.
                // The statement failed whole, so nothing was granted.
                noteContended(request.key());
                return null;
            }
            undoPossibleGrant(request, holder, leaseMillis, sentAt, sentWall);
            throw failure(session, "acquiring lock '" + request.key() + "'", e);
        }
    }


    /**
     * Declares lost every lock whose trusted time has passed, then tries to release them: if the
     * database answers again, the rows become free at once instead of at their lease end.
     */
    private void checkTrust() {
        if (trustChecksPausedForTests) {
            return;
        }
        // The clocks read once for the pass, not twice per lock (100,000 locks: 6 ms of clock reads
        // four times a heartbeat); a trust that ends during the pass is found by the next one.
        List<LeaseLock> held = heldLocks();
        long nowNanos = System.nanoTime();
        long nowWall = wallMillis();
        List<LeaseLock> untrusted = held.stream().filter(lock -> lock.foundGone || !withinTrust(lock, nowNanos, nowWall))
                .toList();
        if (!untrusted.isEmpty()) {
            declareUntrusted(untrusted);
        }
    }

    /**
     * Held back until the holders were told (see {@link #releaseUntrusted}), but noted now: close()
     * releases it even if it comes first.
     */
    @Override
    protected void stoppedTrusting(List<LeaseLock> locks) {
        locks.forEach(lock -> {
            lock.ended = true;
            confirmedInTransactions.remove(lock); // no transaction's hold of them can be renewed
            pendingReleases.put(lock, new PendingRelease(releaseRetriedUntil(lock), false, true));
        });
    }

    /**
     * Each release names its own acquisition, so it cannot touch a hold this client took since. Tried
     * at least once, even when its holders were told after its retry time (see retryReleases).
     */
    @Override
    protected void releaseUntrusted(List<LeaseLock> locks) {
        // Already ended, and out of confirmedInTransactions: by stoppedTrusting, or by releaseInDatabase.
        locks.forEach(lock -> pendingReleases.put(lock, new PendingRelease(releaseRetriedUntil(lock), false, false)));
        scheduleRetry(false);
    }

    /**
     * Retried past the lease this client knows of: a heartbeat held up in the network (in a proxy or
     * pooler) can still reach the server later and extend the row, and after a restart or a failover
     * the pool may first hand out several connections that died with the old server.
     */
    private long releaseRetriedUntil(LeaseLock lock) {
        return leaseEnd(lock) + 2 * networkTimeout.toNanos();
    }

    /**
     * An acquiring statement failed without an answer: the server may still have run it and
     * committed (the answer lost with the connection, the session ended just after the commit, or
     * the statement held up in the network and delivered later), leaving a row held by an
     * acquisition nobody knows. Its holder entry is unique, so releasing that entry is always safe:
     * it is released again and again, until the longest such a grant could still arrive and run has
     * passed, so the row is freed as soon as the server answers instead of at its lease end.
     */
    private void undoPossibleGrant(LockRequest request, String holder, long leaseMillis, long sentAt, long sentWall) {
        LeaseLock possible = new LeaseLock(request.key(), holder, request.isShared(), 0, java.time.Instant.EPOCH,
                leaseMillis, 0, trustedUntil(sentAt, leaseMillis), trustedUntilWall(sentWall, leaseMillis));
        pendingReleases.put(possible, new PendingRelease(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(leaseMillis)
                + 2 * networkTimeout.toNanos(), true, false));
        scheduleRetry(false);
    }

    /**
     * A release still to make: until when it is worth trying, whether a success ends it (false: only
     * time does), and whether it waits for its holders to be told (only close() makes it meanwhile).
     */
    private record PendingRelease(long untilNanos, boolean untilTheEnd, boolean heldBack) {
    }

    /**
     * Starts {@link #retryReleases()} now (or, {@code later}, a heartbeat from now, at most a
     * second). One runs at a time: while one runs or is due, this only notes that there is more.
     */
    private void scheduleRetry(boolean later) {
        // Noted before the look, not after: the retry that runs may stop between the two, and it
        // reads this only after it stopped (see retryReleases).
        retryAgain = true;
        if (!retrying.compareAndSet(false, true)) {
            Runnable hook = afterRetryFoundBusyForTests;
            if (hook != null) {
                hook.run();
            }
            return; // the one running or due takes these too
        }
        submitRetry(later);
    }

    private void submitRetry(boolean later) {
        Runnable run = () -> {
            try {
                untrustedReleases.execute(this::retryReleases);
            } catch (RejectedExecutionException closing) {
                retryRefused();
            }
        };
        try {
            if (later) {
                scheduler.schedule(run, Math.min(heartbeatInterval.toNanos(), TimeUnit.SECONDS.toNanos(1)),
                        TimeUnit.NANOSECONDS);
            } else {
                run.run();
            }
        } catch (RejectedExecutionException closing) {
            retryRefused();
        }
    }

    /** The client's threads are stopping: close() releases what is left, or, once it has, this does. */
    private void retryRefused() {
        retrying.set(false);
        if (databaseClosed) {
            releaseAfterClose();
        }
    }

    /**
     * Makes the releases still pending once close() has given back its sessions and stopped its
     * threads, once, on this thread and a connection borrowed for them: a grant that was given back
     * after close() stopped waiting for it (its thread stalled past the wait, or its session was
     * busy), or a retry that close()'s shutdown dropped. Without this such a row stayed held until its
     * lease ended.
     */
    private void releaseAfterClose() {
        retrying.set(false); // a retry that was due is gone with the client's threads
        List<LeaseLock> left = new ArrayList<>();
        for (LeaseLock lock : pendingReleases.keySet()) {
            if (pendingReleases.remove(lock) != null) { // each taken by one caller, should two run at once
                left.add(lock);
            }
        }
        if (left.isEmpty()) {
            return;
        }
        // This thread may carry an interrupt (a stopping pool thread, an interrupted acquirer): it
        // must not cost the release. Restored below.
        boolean interrupted = Thread.interrupted();
        // Borrowed on a thread of its own, so the wait is bounded as every borrow of the client's is.
        Executor borrower = task -> {
            Thread t = new Thread(task, "pglock-lease-release-after-close");
            t.setDaemon(true);
            t.start();
        };
        try (Connection c = Jdbc.borrow(dataSource, connectionWaitTimeout, borrower, "releasing after close")) {
            PlatformThreads.run(() -> { // an interrupt of a virtual thread would close it (see PlatformThreads)
                c.setAutoCommit(true);
                c.setNetworkTimeout(Runnable::run, (int) Math.min(Integer.MAX_VALUE, networkTimeout.toMillis()));
                for (int i = 0; i < left.size(); i += RELEASE_BATCH) {
                    releaseBatchOn(c, left.subList(i, Math.min(left.size(), i + RELEASE_BATCH)));
                }
                return null;
            });
        } catch (SQLException | RuntimeException e) {
            log.warn("releasing {} lock(s) after the client closed failed ({}); they end when their leases run out",
                    left.size(), e.getMessage());
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * Releases, in one statement however many there are, every row whose release failed or whose
     * acquisition may have been granted unseen, and tries again a heartbeat later (at most a
     * second) while any is still worth trying. close() releases what is still left.
     *
     * <p>A release is tried at least once, and again until its own lease could have ended (and a late
     * statement reached the server), or for as long as this client holds its key again: a shared join
     * keeps the row's older entries (see TRY_LOCK) and its heartbeats renew the row, so an entry whose
     * release was dropped kept the row taken as long as the new hold lasted, and a lease after it. An
     * undo of a possible grant is repeated until its time only: no grant arrives after it. A release
     * held back until its holders were told waits for them (or close()).
     */
    private void retryReleases() {
        retryAgain = false;
        long now = System.nanoTime() + retryClockOffsetNanosForTests;
        List<LeaseLock> batch = pendingReleases.entrySet().stream().filter(pending -> !pending.getValue().heldBack())
                .map(Map.Entry::getKey).toList();
        if (!batch.isEmpty()) {
            awaitHeartbeatRound();
        }
        if (!batch.isEmpty() && releaseAll(batch) >= 0) {
            batch.forEach(lock -> pendingReleases.computeIfPresent(lock, (l, p) -> p.untilTheEnd() ? p : null));
        }
        dropTriedPastTheirTime(batch, now);
        if (pendingReleases.values().stream().anyMatch(pending -> !pending.heldBack())) {
            submitRetry(true); // still this retry's turn
            return;
        }
        Runnable hook = beforeRetryStopsForTests;
        if (hook != null) {
            hook.run();
        }
        retrying.set(false);
        if (retryAgain && retrying.compareAndSet(false, true)) {
            submitRetry(false); // added while this one ran
        }
    }

    /** Of the releases just tried, drops those no longer worth trying again (see retryReleases). */
    private void dropTriedPastTheirTime(List<LeaseLock> tried, long now) {
        java.util.Set<String> heldKeys = null;
        for (LeaseLock lock : tried) {
            PendingRelease pending = pendingReleases.get(lock);
            if (pending == null || now - pending.untilNanos() < 0) {
                continue;
            }
            if (!pending.untilTheEnd()) {
                if (heldKeys == null) {
                    heldKeys = new java.util.HashSet<>();
                    for (LeaseLock held : heldLocks()) {
                        heldKeys.add(held.key());
                    }
                }
                if (heldKeys.contains(lock.key())) {
                    continue;
                }
            }
            pendingReleases.remove(lock, pending);
        }
    }

    /** By this JVM's clock, when the database's lease of this lock ends at the latest (trust ends a margin before). */
    private long leaseEnd(LeaseLock lock) {
        return lock.trustedUntilNanos + safetyMargin.toNanos();
    }

    /**
     * A lock the database just granted; the statement's clock came after sentAt, so the database's
     * expiry is later than the end of our trust. The statement gives its clock in microseconds since
     * the epoch: reading a timestamp instead made pgjdbc build a calendar for each result, about a
     * fifth of the client's own CPU time per acquisition (a JFR profile of the uncontended benchmark).
     */
    private LeaseLock granted(LockRequest request, String holder, long token, long acquiredAtMicros, long leaseMillis,
            long sentAt, long sentWall) {
        java.time.Instant acquiredAt = java.time.Instant.ofEpochSecond(Math.floorDiv(acquiredAtMicros, 1_000_000L),
                Math.floorMod(acquiredAtMicros, 1_000_000L) * 1_000L);
        return new LeaseLock(request.key(), holder, request.isShared(), token, acquiredAt, leaseMillis,
                request.holdAtLeast().toMillis(), trustedUntil(sentAt, leaseMillis), trustedUntilWall(sentWall, leaseMillis));
    }

    /** A renewal sent at {@code sentAt} was confirmed: the lock is trusted for its lease from then, minus the margin. */
    private void extendTrust(LeaseLock lock, long sentAt, long sentWall) {
        long until = trustedUntil(sentAt, lock.leaseMillis);
        if (until - lock.trustedUntilNanos > 0) {
            // The latest confirmed send sets both bounds; a confirmation of an earlier one (a slower
            // statement) changes neither. The wall bound is set even when it is lower than before: the
            // wall clock stepped back since, and a bound kept from before the step would stand still for
            // about the step while renewals went on, so a suspend of that size afterwards went unseen.
            lock.trustedUntilNanos = until;
            lock.trustedUntilWallMillis = trustedUntilWall(sentWall, lock.leaseMillis);
        }
    }

    private long trustedUntil(long sentAtNanos, long leaseMillis) {
        return sentAtNanos + TimeUnit.MILLISECONDS.toNanos(leaseMillis) - safetyMargin.toNanos();
    }

    /**
     * {@link #trustedUntil} by the wall clock, from {@code sentWall}, read with the send's monotonic
     * time. The monotonic clock alone would trust a lease through a suspend of the machine (a laptop's
     * sleep, a hibernated instance), which it does not count, while the database's clock runs on and
     * another client takes the key; a suspend while the statement ran counts too. A step of the wall
     * clock forward only ends the trust early; one backwards leaves the monotonic bound alone until the
     * next renewal, which sets the wall bound from the clock as it reads then (see extendTrust).
     */
    private long trustedUntilWall(long sentWall, long leaseMillis) {
        return sentWall + leaseMillis - safetyMargin.toMillis();
    }

    @Override
    protected LeaseLock lockInDatabase(LockRequest request, long deadlineNanos) {
        // TRY_LOCK first, the cheaper statement when the lock is free; skipped for a key found taken
        // within the last few seconds, where it would nearly always fail and its failure costs a commit.
        if (!recentlyContended(request.key())) {
            LeaseLock lock = tryLockInDatabase(request);
            if (lock != null) {
                return lock;
            }
            noteContended(request.key());
        }
        Wait waiter;
        try {
            // A line pays for its connection and round trips over a longer wait: not for a shared lock
            // (shared waiters must not queue behind each other), nor for a wait shorter than a recheck
            // (such as a semaphore's steps).
            boolean inLine = !request.isShared()
                    && deadlineNanos - System.nanoTime() >= TimeUnit.MILLISECONDS.toNanos(WaitLine.RECHECK_MILLIS);
            waiter = new Wait(request.key(), inLine, deadlineNanos);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        }
        boolean unknownBefore = false;
        long busyBackoffMillis = BUSY_BACKOFF_MILLIS;
        try {
            while (true) {
                if (isClosed()) { // close() woke us: it grants nothing more
                    throw new IllegalStateException("the lock client was closed while waiting for '" + request.key()
                            + "'");
                }
                // Tried at once after registering (or before a line is joined; its first client tries
                // again once it listens): a release between the first try and the LISTEN sent a NOTIFY
                // nobody heard.
                WaiterAttempt attempt = waiterTryLock(request);
                if (attempt.lock() != null) {
                    return attempt.lock();
                }
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) {
                    return null;
                }
                if (attempt.busy()) {
                    // Someone else is taking it right now: it commits in a moment and then holds the key
                    // until a release, which notifies. Look again 20 ms later (then 40, 80, 100 ms),
                    // only to learn the new holder's lease end, or the key free if that claim failed;
                    // a release before then wakes this at once. Looking again sooner made every
                    // waiter of every client read the row several times per hand-off.
                    noteContended(request.key());
                    waiter.await(Math.min(left, TimeUnit.MILLISECONDS.toNanos(busyBackoffMillis)));
                    busyBackoffMillis = Math.min(busyBackoffMillis * 2, BUSY_BACKOFF_MAX_MILLIS);
                    continue;
                }
                busyBackoffMillis = BUSY_BACKOFF_MILLIS;
                if (attempt.holderLeftMillis() == null || attempt.holderLeftMillis() <= 0) {
                    // The row changed under this statement (created, or taken by a waiter that won the
                    // race for it): the next attempt sees the new holder and its lease. Once at once,
                    // then a millisecond apart, so nothing unforeseen can make this spin.
                    if (unknownBefore) {
                        waiter.await(Math.min(left, TimeUnit.MILLISECONDS.toNanos(1)));
                    }
                    unknownBefore = true;
                    continue;
                }
                unknownBefore = false;
                noteContended(request.key());
                // Wake on NOTIFY, or when the holder's lease ends by the database clock (a crashed
                // holder sends no NOTIFY), or when our wait runs out.
                long recheck = TimeUnit.MILLISECONDS.toNanos(attempt.holderLeftMillis() + 1);
                waiter.await(Math.min(left, recheck));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        } finally {
            waiter.close();
        }
    }

    /**
     * How one caller waits between two attempts: in the key's {@link WaitLine} when it may have one
     * (exclusive, a wait of a recheck or more, a free {@link #lineSlots} permit, lines neither
     * turned off by a pooler nor paused by a borrow that ran out), else through the LISTEN connection,
     * and through it too from the moment its line's connection fails. Either way it is registered
     * (or first in line, which registers) before its next attempt, so that attempt or a NOTIFY sees
     * every release after it.
     */
    private final class Wait {
        private final String key;
        private final long deadlineNanos;
        private WaitLine line;
        private LeaseListener.Waiter waiter;
        /**
         * The line connection whose borrow ran out: when it comes after all (a cold pool opening it),
         * this caller moves from the LISTEN connection into the key's line with it, at its next wait;
         * null once taken, or when there was none.
         */
        private CompletableFuture<Connection> late;

        Wait(String key, boolean inLine, long deadlineNanos) throws InterruptedException {
            this.key = key;
            this.deadlineNanos = deadlineNanos;
            if (inLine && !linesOff && !linesPaused() && lineSlots.tryAcquire()) {
                CompletableFuture<Connection> borrowing = new CompletableFuture<>();
                line = WaitLine.open(listenDataSource, connectionWaitTimeout, connector, channel, key,
                        lineLockId(key), listener.waiterLockId(key), deadlineNanos, lineRecheckMillisForTests,
                        borrowing);
                if (line == null) {
                    // No connection in time (or it failed): waiters use the LISTEN connection rather
                    // than each wait for a connection first, until the borrow that ran out gets its
                    // connection (a cold pool opened it): a second at least, so a pool that stays
                    // exhausted costs a 250 ms borrow once a second at most, and 5 s at most.
                    long now = System.nanoTime();
                    linesPause = new LinesPause(borrowing, now + LINES_PAUSE_MIN_NANOS, now + LINES_PAUSE_NANOS);
                    lineSlots.release();
                    late = borrowing;
                } else {
                    lines.add(line);
                    if (isClosed()) {
                        line.abort(); // stopWaits ran before it was listed
                    }
                }
            }
            if (line == null) {
                try {
                    waiter = listener.register(key, deadlineNanos);
                } catch (InterruptedException | RuntimeException | Error e) {
                    if (late != null) {
                        late.thenAccept(Jdbc::closeQuietly); // no Wait to close: its connection goes back when it comes
                    }
                    throw e;
                }
                if (late != null) {
                    // Woken when it comes, to move into the line: it attempts once more, then waits there.
                    LeaseListener.Waiter listening = waiter;
                    late.thenRun(listening::signal);
                }
            }
        }

        /** Waits until the caller should attempt again: see {@link WaitLine#await} and {@link LeaseListener.Waiter#await}. */
        void await(long nanos) throws InterruptedException {
            if (line == null && late != null && late.isDone()) {
                joinLateLine();
            }
            if (line == null) {
                waiter.await(nanos);
            } else if (!line.await(nanos)) {
                leaveLine(); // its connection failed: registered through the LISTEN connection, then attempts
                waiter = listener.register(key, deadlineNanos);
            }
        }

        /**
         * Moves this caller from the LISTEN connection into the key's line, on the connection that
         * came late. Its next wait joins the line and, when first, attempts once it listens there, so a
         * release between leaving the LISTEN connection and joining is seen by that attempt; behind
         * the first, the first client hears it.
         */
        private void joinLateLine() {
            Connection connection = late.getNow(null); // done, with a connection: nothing completes it otherwise
            late = null;
            WaitLine joined = null;
            if (!linesOff && !isClosed() && deadlineNanos - System.nanoTime()
                    >= TimeUnit.MILLISECONDS.toNanos(WaitLine.RECHECK_MILLIS) && lineSlots.tryAcquire()) {
                joined = WaitLine.of(connection, connector, channel, key, lineLockId(key), listener.waiterLockId(key),
                        deadlineNanos, lineRecheckMillisForTests);
                if (joined == null) {
                    lineSlots.release(); // its connection was aborted
                    return;
                }
            }
            if (joined == null) {
                Jdbc.closeQuietly(connection);
                return;
            }
            lines.add(joined);
            if (isClosed()) {
                joined.abort(); // stopWaits ran before it was listed
            }
            listener.unregister(key, waiter);
            waiter = null;
            line = joined;
        }

        void close() {
            if (late != null) {
                late.thenAccept(Jdbc::closeQuietly); // when it comes, or now if it came: back to its pool
            }
            if (waiter != null) {
                listener.unregister(key, waiter);
            }
            if (line != null) {
                leaveLine();
            }
        }

        /** Leaves the line on another thread, so a caller that just won returns at once; the next client is first a round trip later. */
        private void leaveLine() {
            WaitLine leaving = line;
            line = null;
            Runnable leave = () -> {
                try {
                    leaving.leave();
                    if (leaving.moved() && !linesOff) {
                        linesOff = true;
                        log.warn("the LISTEN DataSource ran a wait line's statements on another server session, as"
                                + " PgBouncer in transaction pooling does: that session was ended, and callers of"
                                + " this client wait through the LISTEN connection from now on. Give listenDataSource"
                                + " a direct connection to PostgreSQL (or a session-pooling PgBouncer)");
                    }
                } finally {
                    lines.remove(leaving);
                    lineSlots.release();
                }
            };
            try {
                connector.execute(leave);
            } catch (RejectedExecutionException e) {
                leave.run(); // closing: the connection was aborted, so this only tidies up
            }
        }
    }

    /**
     * A waiter's attempt: the lock, or how long its holder's lease has left (null: unknown, try again),
     * or busy: another session was taking the key at that moment (look again shortly).
     */
    private record WaiterAttempt(LeaseLock lock, Long holderLeftMillis, boolean busy) {
    }

    private WaiterAttempt waiterTryLock(LockRequest request) {
        long leaseMillis = request.lease().orElse(defaultLease).toMillis();
        LockSession session = sessions.session();
        String holder = newHolder();
        long sentAt = System.nanoTime();
        long sentWall = wallMillis(); // read with sentAt: a suspend while the statement runs must count
        try {
            return session.callClaimed(c -> {
                refuseIfClosed(request);
                try (PreparedStatement ps = c.prepareStatement(waiterTryLock)) {
                    ps.setString(1, namespace);
                    ps.setString(2, request.key());
                    ps.setString(3, holder);
                    ps.setBoolean(4, request.isShared());
                    ps.setLong(5, leaseMillis);
                    ps.setBytes(6, request.data());
                    try (ResultSet rs = ps.executeQuery()) {
                        if (!rs.next()) {
                            return new WaiterAttempt(null, null, false);
                        }
                        long token = rs.getLong(1);
                        if (rs.wasNull()) {
                            return new WaiterAttempt(null, rs.getLong(3), rs.getBoolean(4));
                        }
                        LeaseLock lock = granted(request, holder, token, rs.getLong(2), leaseMillis, sentAt, sentWall);
                        return new WaiterAttempt(lock, null, false);
                    }
                }
            });
        } catch (SQLException e) {
            undoPossibleGrant(request, holder, leaseMillis, sentAt, sentWall);
            throw failure(session, "acquiring lock '" + request.key() + "'", e);
        }
    }

    @Override
    protected CompletableFuture<Released> releaseInDatabase(LeaseLock lock) {
        lock.ended = true;
        confirmedInTransactions.remove(lock);
        // The holder's work was protected while the lease was trusted; past that, even a release that
        // succeeds cannot say another holder was not let in meanwhile.
        boolean trustedToTheEnd = withinTrust(lock);
        LockSession session = null;
        try {
            session = sessions.session();
            LockSession on = session;
            boolean released = session.callClaimed(c -> {
                { // kept open on the session: see LockSession.prepared
                    PreparedStatement ps = on.prepared(lock.isShared() ? release : releaseExclusive);
                    if (lock.isShared()) {
                        bind(ps, lock.holder, lock.holder, holdAtLeastMillis(lock), lock.holder, namespace, lock.key(),
                                lock.holder, listener.waiterLockId(lock.key()), channel);
                    } else {
                        bind(ps, holdAtLeastMillis(lock), namespace, lock.key(), lock.holder,
                                listener.waiterLockId(lock.key()), channel);
                    }
                    try (ResultSet rs = ps.executeQuery()) {
                        return rs.next();
                    }
                }
            });
            if (!released) {
                return CompletableFuture.completedFuture(Released.gone(Reason.TAKEN_OVER, "the database no longer had it as "
                        + lock.holder + "'s when it was released (taken over, or its row deleted)", null));
            }
        } catch (SQLException | RuntimeException e) {
            if (session != null && e instanceof SQLException sql) {
                failure(session, "releasing", sql);
            }
            // Tried once more off this thread (which may have been interrupted, or found the pool
            // empty); scoped to this acquisition, so it cannot touch a newer hold. If that fails
            // too, the row ends when its lease runs out.
            log.warn("releasing lock '{}' failed ({}); trying once more, else it ends when its lease runs out",
                    lock.key(), e.getMessage());
            releaseUntrusted(List.of(lock)); // also while close() waits: the entry is gone, close() will not see it
            // A heartbeat that found the row gone before this release ran has not reported it yet
            // (its round reports at its end, and skips an entry being released): this failed
            // release is where the holder hears. (A release that succeeded proved the row was still
            // this holder's: a renewal that waited behind it and then found it emptied set the flag
            // after the fact.)
            if (lock.foundGone) {
                return CompletableFuture.completedFuture(Released.gone(Reason.TAKEN_OVER, "its row was taken over,"
                        + " released or deleted by someone else (a heartbeat found it gone before it was released)",
                        null));
            }
        }
        return CompletableFuture.completedFuture(trustedToTheEnd ? Released.HELD : Released.gone(untrustedCategory(lock), "no heartbeat was"
                + " confirmed within the lease minus a safety margin before it was released", null));
    }

    /** Binds strings and longs (the only types a release takes) in order. */
    private static void bind(PreparedStatement ps, Object... values) throws SQLException {
        for (int i = 0; i < values.length; i++) {
            ps.setObject(i + 1, values[i]);
        }
    }

    /**
     * Releases locks, {@link #RELEASE_BATCH} per statement; hold-at-least is judged there, by the
     * database clock. Never throws: a lock that cannot be released ends when its lease runs out.
     *
     * @return how many rows were ours to release, or -1 when a statement failed
     */
    private int releaseAll(List<LeaseLock> locks) {
        int released = 0;
        for (int i = 0; i < locks.size(); i += RELEASE_BATCH) {
            int batch = releaseBatch(locks.subList(i, Math.min(locks.size(), i + RELEASE_BATCH)));
            if (batch < 0) {
                return -1; // the caller tries them all again: a batch released already finds nothing
            }
            released += batch;
        }
        return released;
    }

    private int releaseBatch(List<LeaseLock> locks) {
        String[] keys = locks.stream().map(LeaseLock::key).toArray(String[]::new);
        LockSession session = null;
        try {
            session = sessions.session();
            return session.callClaimed(c -> releaseBatchOn(c, locks));
        } catch (SQLException | RuntimeException e) {
            if (session != null && e instanceof SQLException sql) {
                failure(session, "releasing", sql);
            }
            log.warn("releasing {} failed ({}); it ends when its lease runs out", keys.length == 1 ? "lock '" + keys[0]
                    + "'" : keys.length + " locks", e.getMessage());
            return -1;
        }
    }

    /**
     * Set by close(): until when (epoch microseconds, the database's clock) RELEASE_ALL keeps the row
     * of each semaphore marker it releases, by marker key; empty otherwise.
     */
    private volatile Map<String, Long> markersKeptUntil = Map.of();

    /**
     * For close(): a semaphore's marker stays taken as long as hold-at-least keeps a permit of the
     * same semaphore and size taken, whether the permit is among {@code locks} (held at close(), or
     * a release still to make) or was released before with its hold-at-least still running. Otherwise
     * close() would free the marker at once, and a caller asking for another number of permits would
     * be let in beside the kept permit. By marker key, in epoch microseconds of the database's clock
     * (permits' acquisitions are timed by it).
     */
    private Map<String, Long> markersKeptUntil(List<LeaseLock> locks) {
        Map<String, Long> until = new HashMap<>();
        for (LeaseLock lock : locks) {
            int[] permit = PermitKeys.parse(lock.key());
            if (permit != null && permit[0] >= 0 && holdAtLeastMillis(lock) > 0) {
                until.merge(PermitKeys.marker(PermitKeys.semaphoreOf(lock.key()), permit[1]),
                        epochMicros(lock.acquiredAt()) + holdAtLeastMillis(lock) * 1000, Math::max);
            }
        }
        for (LeaseLock lock : locks) {
            int[] marker = PermitKeys.parse(lock.key());
            if (marker != null && marker[0] == -1) {
                String semaphore = PermitKeys.semaphoreOf(lock.key());
                for (int i = 0; i < marker[1]; i++) {
                    holdAtLeastUntil(PermitKeys.permit(semaphore, i, marker[1]))
                            .ifPresent(kept -> until.merge(lock.key(), epochMicros(kept), Math::max));
                }
            }
        }
        return Map.copyOf(until);
    }

    private static long epochMicros(Instant instant) {
        return Math.addExact(Math.multiplyExact(instant.getEpochSecond(), 1_000_000L), instant.getNano() / 1000);
    }

    /** The hold-at-least a release of {@code lock} keeps: none for a grant given back unused. */
    private static long holdAtLeastMillis(LeaseLock lock) {
        return lock.isUnused() ? 0 : lock.holdAtLeastMillis;
    }

    /** RELEASE_ALL of these locks on {@code c}; how many rows it released. */
    private int releaseBatchOn(Connection c, List<LeaseLock> locks) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(releaseAll)) {
            Jdbc.planEveryRun(ps); // planned for its arrays, as the heartbeat
            ps.setArray(1, c.createArrayOf("text", locks.stream().map(LeaseLock::key).toArray(String[]::new)));
            ps.setArray(2, c.createArrayOf("text", locks.stream().map(lock -> lock.holder).toArray(String[]::new)));
            ps.setArray(3, c.createArrayOf("bigint", locks.stream().map(LeaseLockClient::holdAtLeastMillis)
                    .toArray(Long[]::new)));
            ps.setArray(4, c.createArrayOf("bigint", locks.stream().map(lock -> listener.waiterLockId(lock.key()))
                    .toArray(Long[]::new)));
            Map<String, Long> keep = markersKeptUntil;
            ps.setArray(5, c.createArrayOf("bigint", locks.stream().map(lock -> keep.get(lock.key()))
                    .toArray(Long[]::new)));
            ps.setString(6, namespace);
            ps.setString(7, namespace);
            ps.setString(8, channel);
            int released = 0;
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    released++;
                }
            }
            return released;
        }
    }

    /** For tests: runs a retry of the releases still to make now, as a failed release does. */
    void retryReleasesForTests() {
        scheduleRetry(false);
    }

    /** For tests: gives up a held lock as the trust check does once it stops trusting its lease. */
    void declareUntrustedForTests(String key) {
        declareUntrustedForTests(List.of(key));
    }

    /** For tests: the same for several locks at once, as one trust check finds them. */
    void declareUntrustedForTests(List<String> keys) {
        declareUntrusted(heldLocks().stream().filter(lock -> keys.contains(lock.key())).toList());
    }

    /** For tests: whether a thread waits for a heartbeat round to end (see rowOrder). */
    boolean rowOrderHasWaiters() {
        return rowOrder.hasQueuedThreads();
    }

    @Override
    protected boolean updateDataInDatabase(LeaseLock lock, byte[] data) {
        LockSession session = sessions.session();
        try {
            return session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(updateData)) {
                    ps.setBytes(1, data);
                    ps.setString(2, namespace);
                    ps.setString(3, lock.key());
                    ps.setString(4, lock.holder);
                    return ps.executeUpdate() == 1;
                }
            });
        } catch (SQLException e) {
            throw failure(session, "updating the data of lock '" + lock.key() + "'", e);
        }
    }

    private void startHeartbeat() {
        if (heartbeatsPausedForTests) {
            return;
        }
        if (heartbeatRunning.compareAndSet(false, true)) {
            lastRoundNanos = System.nanoTime();
            try {
                connector.execute(() -> {
                    try {
                        sendHeartbeat();
                        // Sessions that concurrent callers opened go back to the pool once idle.
                        sessions.retireIdle(idleNanos, this::disposeRetired);
                    } finally {
                        heartbeatRunning.set(false);
                    }
                });
            } catch (RuntimeException e) {
                heartbeatRunning.set(false);
            }
        }
    }

    /**
     * Locks renewed, or released together, per statement: each statement stays short (well within the
     * network timeout) however many locks the client holds.
     */
    static final int BATCH = 5_000;
    /**
     * Locks released together per statement. Fewer than {@link #BATCH}: each released row's check for
     * waiters takes a transaction-level advisory lock, which PostgreSQL keeps in its shared lock table
     * (64 x max_connections slots by default, shared by every session) until the commit; 5,000 at
     * once could find no room on a server whose other sessions hold advisory locks, and the release
     * then failed as a whole. 500 leaves room, and 100,000 leases still go in 200 short statements.
     */
    static final int RELEASE_BATCH = 500;

    /**
     * Renews every lock this client holds; those a statement does not return are lost. Up to
     * {@link #BATCH} locks per statement; more are renewed in batches of neighbouring keys, two
     * statements at a time (on two sessions). Exclusive locks first, holding rowOrder (see
     * HEARTBEAT_EXCLUSIVE), then shared locks with HEARTBEAT, which locks its rows in key order as
     * RELEASE_ALL does. Locks found gone are reported, and the observer told, once the round is over.
     */
    void sendHeartbeat() {
        // The locks a statement did not return (by identity, as lost() matches them); two workers add.
        Set<LeaseLock> gone = java.util.Collections.synchronizedSet(
                java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>()));
        long started = 0;
        java.util.concurrent.atomic.AtomicReference<String> failed = new java.util.concurrent.atomic.AtomicReference<>();
        try {
            List<LeaseLock> shared;
            rowOrder.lock(); // before listing: a transaction's confirmation registers its lock under it
            try {
                // Also while close(Duration) waits for holders to finish: their leases must not run out
                // then. Not the locks a transaction has confirmed: it holds their rows until it ends.
                List<LeaseLock> held = heldLocks();
                if (!confirmedInTransactions.isEmpty()) {
                    held.removeIf(confirmedInTransactions::containsKey);
                }
                Runnable listed = heartbeatListedForTests;
                if (listed != null) {
                    listed.run();
                }
                if (held.isEmpty()) {
                    heartbeatFailure = null; // nothing to renew: an old failure says nothing about the next lock
                    return;
                }
                started = System.nanoTime();
                held.sort(java.util.Comparator.comparing(LeaseLock::key));
                shared = held.stream().filter(LeaseLock::isShared).toList();
                renewAll(held.stream().filter(lock -> !lock.isShared()).toList(), failed, gone);
            } finally {
                rowOrder.unlock();
            }
            // Shared locks after letting go: their statement locks rows in key order, as other clients'
            // do, and may wait for another client's transaction, which must not hold up this client's
            // confirmations (they wait for rowOrder, where PostgreSQL cannot see a cycle).
            renewAll(shared, failed, gone);
        } catch (RuntimeException e) {
            failed.compareAndSet(null, String.valueOf(e.getMessage()));
            throw e;
        } finally {
            if (started != 0) {
                String failure = failed.get();
                heartbeatFailure = failure;
                if (failure == null) {
                    lastHeartbeatNanos = System.nanoTime();
                }
                // Listeners and the observer are the user's code: never while holding rowOrder.
                Runnable hook = beforeGoneReportedForTests;
                if (hook != null && !gone.isEmpty()) {
                    hook.run();
                }
                if (!gone.isEmpty()) {
                    // A lease whose trust had already run out (this process paused past it, say) is
                    // lost for that, as the trust check would have reported it had it run first: its
                    // renewal found the lease ended, not necessarily taken.
                    List<LeaseLock> untrusted = heldLocks().stream().filter(lock -> gone.contains(lock) && !withinTrust(lock))
                            .toList();
                    if (!untrusted.isEmpty()) {
                        declareUntrusted(untrusted);
                    }
                    lost(gone::contains, Reason.TAKEN_OVER, FOUND_GONE, null);
                }
                observeHeartbeat(started, failure == null);
            }
        }
    }

    /**
     * Before RELEASE_ALL: waits for the heartbeat round in flight to let go of rowOrder (at most the
     * network timeout; not when interrupted). The locks it releases are no longer listed by rounds
     * that start later, and it does not hold rowOrder itself while releasing, so a row a transaction
     * holds cannot hold up the rounds (see HEARTBEAT_EXCLUSIVE).
     */
    private void awaitHeartbeatRound() {
        try {
            if (rowOrder.tryLock(networkTimeout.toNanos(), TimeUnit.NANOSECONDS)) {
                rowOrder.unlock();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** When a heartbeat round last started (System.nanoTime): one that never starts is a stalled client. */
    private volatile long lastRoundNanos = System.nanoTime();

    /** Why the last heartbeat round failed (a statement of it), or null when it succeeded. */
    private volatile String heartbeatFailure;
    /** When a heartbeat round last succeeded (System.nanoTime); 0 if none has. */
    private volatile long lastHeartbeatNanos;

    /** Renews locks of one kind, sorted by key, in batches of neighbouring keys, two statements at a time. */
    private void renewAll(List<LeaseLock> held, java.util.concurrent.atomic.AtomicReference<String> failed,
            Set<LeaseLock> gone) {
        if (held.size() <= BATCH) {
            renew(held, failed, gone);
            return;
        }
        List<List<LeaseLock>> batches = new ArrayList<>();
        for (int i = 0; i < held.size(); i += BATCH) {
            batches.add(held.subList(i, Math.min(held.size(), i + BATCH)));
        }
        java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
        Runnable worker = () -> {
            for (int i; (i = next.getAndIncrement()) < batches.size(); ) {
                renew(batches.get(i), failed, gone);
            }
        };
        CompletableFuture<Void> second;
        try {
            second = CompletableFuture.runAsync(worker, connector);
        } catch (RejectedExecutionException closing) {
            second = CompletableFuture.completedFuture(null);
        }
        try {
            worker.run();
        } finally {
            second.join(); // never back to the caller (who lets go of rowOrder) while the other still runs
        }
    }

    /**
     * One heartbeat statement for {@code held}, all exclusive or all shared; the locks it does not
     * return go into {@code gone}.
     */
    private void renew(List<LeaseLock> held, java.util.concurrent.atomic.AtomicReference<String> failed,
            Set<LeaseLock> gone) {
        if (held.isEmpty()) {
            return;
        }
        boolean exclusive = !held.get(0).isShared();
        String[] keys = new String[held.size()];
        String[] holders = new String[held.size()];
        Long[] leases = new Long[held.size()];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = held.get(i).key();
            holders[i] = held.get(i).holder;
            leases[i] = held.get(i).leaseMillis;
        }
        long sentAt = 0;
        long sentWall = 0;
        Set<String> renewed = new HashSet<>();
        boolean[] allRenewed = new boolean[1];
        for (int attempt = 1; ; attempt++) {
            LockSession session;
            try {
                session = sessions.session();
            } catch (RuntimeException e) {
                log.debug("no session for the heartbeat: {}", e.getMessage());
                failed.set(e.getMessage());
                return;
            }
            sentAt = System.nanoTime();
            sentWall = wallMillis();
            renewed.clear(); // only what this attempt renewed counts, from its own send time
            allRenewed[0] = false;
            try {
                session.callClaimed(c -> {
                    if (exclusive) {
                        // How many first; which ones only when not all (see HEARTBEAT_EXCLUSIVE_COUNT).
                        allRenewed[0] = runHeartbeat(c, heartbeatExclusiveCount, true, true, keys, holders, leases, renewed)
                                == keys.length;
                        if (!allRenewed[0]) {
                            runHeartbeat(c, heartbeatExclusive, false, true, keys, holders, leases, renewed);
                        }
                    } else {
                        runHeartbeat(c, heartbeat, false, false, keys, holders, leases, renewed);
                    }
                    return null;
                });
                break;
            } catch (RuntimeException e) { // the session ended under it, say: this round failed, the next one tries
                log.debug("heartbeat failed; locks stay trusted until their margin runs out: {}", e.getMessage());
                failed.set(String.valueOf(e.getMessage()));
                return;
            } catch (SQLException e) {
                failure(session, "the heartbeat", e);
                if (attempt == 1 && Jdbc.isConnectionFailure(e, session.connection)) {
                    continue; // that session broke: once more on another, before trust runs out
                }
                log.debug("heartbeat failed; locks stay trusted until their margin runs out: {}", e.getMessage());
                failed.set(e.getMessage());
                return;
            }
        }
        for (LeaseLock lock : held) {
            if (allRenewed[0] || renewed.contains(lock.holder)) {
                extendTrust(lock, sentAt, sentWall);
            } else {
                lock.foundGone = true; // a release that comes before the report below says so too
                gone.add(lock); // reported lost once the round ends
            }
        }
    }

    /**
     * Runs a heartbeat statement: one {@code counting} (HEARTBEAT_EXCLUSIVE_COUNT) returns how many
     * it renewed; another adds the holders it renewed to {@code renewed} and returns -1.
     */
    private int runHeartbeat(java.sql.Connection c, String sql, boolean counting, boolean exclusive, String[] keys,
            String[] holders, Long[] leases, Set<String> renewed) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            Jdbc.planEveryRun(ps); // planned for its arrays: see Jdbc.planEveryRun
            ps.setArray(1, c.createArrayOf("text", keys));
            ps.setArray(2, c.createArrayOf("text", holders));
            ps.setArray(3, c.createArrayOf("bigint", leases));
            ps.setString(4, namespace);
            if (!exclusive) {
                ps.setString(5, namespace);
            }
            try (ResultSet rs = ps.executeQuery()) {
                if (counting) {
                    rs.next();
                    return rs.getInt(1);
                }
                while (rs.next()) {
                    renewed.add(rs.getString(1));
                }
                return -1;
            }
        }
    }

    private void purge() {
        LockSession session;
        try {
            session = sessions.session();
            int purged = session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(purge)) {
                    return ps.executeUpdate();
                }
            });
            log.debug("purged {} old rows from {}", purged, channel);
        } catch (SQLException | RuntimeException e) {
            log.debug("purging old rows failed: {}", e.getMessage());
        }
    }

    @Override
    public Optional<LockInfo> get(String key) {
        LockRequest.of(key); // the same checks as for acquiring
        return query(get, key).stream().findFirst();
    }

    @Override
    public Optional<LockInfo> forceRelease(String key) {
        Optional<LockInfo> before = get(key);
        if (before.isEmpty()) {
            return before;
        }
        LockSession session = sessions.session();
        int freed;
        try {
            freed = session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(forceRelease)) {
                    ps.setString(1, namespace);
                    ps.setString(2, key);
                    ps.setLong(3, before.get().fencingToken().orElse(-1));
                    ps.setString(4, channel);
                    int rows = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows++;
                        }
                    }
                    return rows;
                }
            });
        } catch (SQLException e) {
            throw failure(session, "force-releasing lock '" + key + "'", e);
        }
        return freed == 0 ? Optional.empty() : before;
    }

    /** Every lock in the table, of every namespace (each {@link LockInfo#namespace()} says which). */

    @Override
    public List<LockInfo> list() {
        return query(list, null);
    }

    @Override
    public List<LockInfo> permitHolders(String key) {
        return query(permits, PermitKeys.permitPrefix(key));
    }

    @Override
    public Set<Integer> semaphoreSizes(String key) {
        ensureOpen();
        LockSession session = sessions.session();
        try {
            return session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(semaphoreSizes)) {
                    ps.setString(1, namespace);
                    ps.setString(2, PermitKeys.markerPrefix(key));
                    Set<Integer> sizes = new java.util.TreeSet<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            int[] parsed = PermitKeys.parse(rs.getString(1));
                            if (parsed != null) {
                                sizes.add(parsed[1]);
                            }
                        }
                    }
                    return sizes;
                }
            });
        } catch (SQLException e) {
            throw failure(session, "reading the markers of semaphore '" + key + "'", e);
        }
    }

    /** Runs {@code sql} with the namespace and {@code key} as parameters (none when {@code key} is null). */
    private List<LockInfo> query(String sql, String key) {
        ensureOpen();
        LockSession session = sessions.session();
        try {
            return session.callClaimed(c -> {
                try (PreparedStatement ps = c.prepareStatement(sql)) {
                    if (key != null) {
                        ps.setString(1, namespace);
                        ps.setString(2, key);
                    }
                    List<LockInfo> result = new ArrayList<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            String storedKey = rs.getString("lock_key");
                            if (PermitKeys.isMarker(storedKey)) {
                                continue; // a semaphore's bookkeeping, not a lock anyone asked for
                            }
                            List<String> holders = java.util.Arrays.stream((String[]) rs.getArray("holders").getArray())
                                    .map(LeaseLockClient::ownerOf).distinct().toList();
                            Timestamp expires = rs.getTimestamp("expires_at");
                            result.add(LockInfo.builder(LockMode.LEASE)
                                    .namespace(rs.getString("namespace"))
                                    .storedKey(storedKey)
                                    .owner(String.join(",", holders))
                                    .holders(holders)
                                    .heldByThisClient(holders.contains(owner()))
                                    .shared(rs.getBoolean("shared"))
                                    .fencingToken(rs.getLong("fencing_token"))
                                    .acquiredAt(rs.getTimestamp("acquired_at").toInstant())
                                    .expiresAt(expires.toInstant())
                                    .data(rs.getBytes("data"))
                                    .build());
                        }
                    }
                    return result;
                }
            });
        } catch (SQLException e) {
            throw failure(session, "reading the lease table", e);
        }
    }

    /**
     * Once close() began, no statement that could grant a lock starts: close() waits only for those
     * already running, so a grant can never commit after close() stopped waiting (it could then not
     * be given back, and the row would stay held until its lease ended).
     */
    private void refuseIfClosed(LockRequest request) {
        if (isClosed()) {
            throw new IllegalStateException("the lock client was closed before lock '" + request.key() + "' was taken");
        }
    }

    /** Wraps a failure; a session whose connection broke is replaced on next use (the rows are unaffected). */
    private LockDatabaseException failure(LockSession session, String what, SQLException e) {
        if (Jdbc.isConnectionFailure(e, session.connection) && session.end()) {
            sessions.remove(session);
            session.abortAndDispose(networkTimeout.toNanos());
        }
        return new LockDatabaseException(what + " failed: " + e.getMessage(), e);
    }

    @Override
    protected void stopWaits() {
        listener.close(); // wakes every waiter, which then sees the client closed
        lines.forEach(WaitLine::abort); // and ends every wait in line at once
    }

    /** Gives back the connection of a session that was retired (or ended), never under a statement still running. */
    private void disposeRetired(LockSession session) {
        boolean closed = false;
        try {
            closed = session.tryCallEvenIfEnded(c -> {
                c.close();
                return null;
            }, networkTimeout.toNanos());
        } catch (SQLException e) {
            log.debug("closing {} failed", session, e);
        }
        if (!closed) {
            Jdbc.abortQuietly(session.connection);
        }
    }

    @Override
    protected void closeDatabase(List<LeaseLock> held) {
        listener.close();
        lines.forEach(WaitLine::abort);
        // Held locks, and every release still to make (see retryReleases): by their own holder
        // entries, so releasing one that is gone already touches nothing.
        List<LeaseLock> all = new ArrayList<>(held);
        pendingReleases.keySet().stream().filter(lock -> !all.contains(lock)).forEach(all::add);
        pendingReleases.clear();
        // One statement; it keeps hold-at-least where it applies. Tried again for up to the network
        // timeout: after a restart or terminated backends the pool may first hand out several
        // connections that died with their server sessions, and each failure retires one.
        // close() cleared the closing thread's interrupt flag; one that comes now must not cost these
        // releases or the sessions below: remembered, restored at the end (close() keeps it).
        boolean interrupted = Thread.interrupted();
        if (!all.isEmpty()) {
            awaitHeartbeatRound(); // before the deadline: its retries are for connections that died
        }
        markersKeptUntil = markersKeptUntil(all);
        long deadline = System.nanoTime() + networkTimeout.toNanos();
        long pause = Math.max(1, Math.min(heartbeatInterval.toMillis() / 4, 100));
        while (!all.isEmpty() && releaseAll(all) < 0 && System.nanoTime() - deadline < 0) {
            try {
                Thread.sleep(pause);
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        for (LockSession session : sessions.drain()) {
            if (session.end()) {
                disposeRetired(session); // never closed under a statement still running on it
            }
        }
        connector.shutdownNow();
        databaseClosed = true;
        releaseAfterClose(); // what came while closing: a retry the shutdown dropped, a late give-back
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
