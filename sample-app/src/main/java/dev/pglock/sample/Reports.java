package dev.pglock.sample;

import dev.pglock.core.LockRequest;
import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockTemplate;
import java.time.Duration;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.stereotype.Service;

/**
 * A report many replicas may read at once (a shared lock) while one rebuilds it (an exclusive lock,
 * taken in code with {@link LockTemplate}, whose fencing token guards the write).
 */
@Service
public class Reports {

    private final JdbcTemplate jdbc;
    private final LockTemplate locks;
    private final SampleSettings settings;

    Reports(JdbcTemplate jdbc, LockTemplate locks, SampleSettings settings) {
        this.jdbc = jdbc;
        this.locks = locks;
        this.settings = settings;
    }

    /** Reads the report under a shared lock: other readers may read at the same time, a rebuild may not. */
    @DistributedLock(key = "'report'", shared = true, waitAtMost = "2s")
    public String read() {
        return recorded("read", () -> jdbc.queryForList("SELECT content FROM sample_report WHERE run_id = ?",
                String.class, settings.runId()).stream().findFirst().orElse(""));
    }

    /**
     * Rebuilds the report under the exclusive lock. The write carries the lock's fencing token and
     * only lands if no newer holder has written: a holder that lost its lock cannot overwrite.
     *
     * @return whether it ran (false when the lock stayed taken for the whole wait)
     */
    public boolean rebuild() {
        return locks.tryRun(LockRequest.of("report").waitAtMost(Duration.ofSeconds(2)), lock ->
                recorded("write", () -> jdbc.update("""
                        INSERT INTO sample_report (run_id, content, fencing_token, built_by) VALUES (?, ?, ?, ?)
                        ON CONFLICT (run_id) DO UPDATE SET content = EXCLUDED.content,
                            fencing_token = EXCLUDED.fencing_token, built_by = EXCLUDED.built_by
                        WHERE sample_report.fencing_token < EXCLUDED.fencing_token""", settings.runId(),
                        "built by " + settings.replica(), lock.fencingToken(), settings.replica())));
    }

    /** Records when the access started and ended (database clock), so the demo can check overlaps. */
    private <T> T recorded(String kind, java.util.function.Supplier<T> access) {
        java.sql.Timestamp start = jdbc.queryForObject("SELECT clock_timestamp()", java.sql.Timestamp.class);
        settings.pause();
        T result = access.get();
        jdbc.update("INSERT INTO sample_report_access (run_id, replica, kind, started_at, ended_at)"
                + " VALUES (?, ?, ?, ?, clock_timestamp())", settings.runId(), settings.replica(), kind, start);
        return result;
    }
}
