package dev.pglock.sample;

import dev.pglock.spring.DistributedLock;
import java.time.Duration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.stereotype.Component;

/**
 * The ShedLock use case: every replica's scheduler fires each tick, one replica runs it, the others
 * skip quietly. Hold-at-least keeps the lock after this fast job returns, so a replica whose tick
 * comes a few milliseconds later does not run it again.
 */
@Component
public class ReportJob {

    private static final Logger log = LoggerFactory.getLogger(ReportJob.class);

    private final JdbcTemplate jdbc;
    private final SampleSettings settings;
    /** How long the job works (the demo makes it work, so that a crash can land while it runs). */
    private final Duration work;

    ReportJob(JdbcTemplate jdbc, SampleSettings settings, @Value("${sample.tick-work:0ms}") Duration work) {
        this.jdbc = jdbc;
        this.settings = settings;
        this.work = work;
    }

    @Scheduled(cron = "${sample.tick-cron:* * * * * *}")
    @DistributedLock(holdAtLeast = "${sample.tick-hold:800ms}")
    public void tick() {
        // The tick is named by the database clock's nearest second, so replicas agree on it.
        Long tick = jdbc.queryForObject("INSERT INTO sample_tick (run_id, tick, replica)"
                + " VALUES (?, round(extract(epoch FROM clock_timestamp())), ?) RETURNING tick", Long.class,
                settings.runId(), settings.replica());
        if (!work.isZero()) {
            try {
                Thread.sleep(work.toMillis());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        jdbc.update("UPDATE sample_tick SET ended_at = clock_timestamp() WHERE run_id = ? AND tick = ? AND replica = ?",
                settings.runId(), tick, settings.replica());
        log.info("tick {} ran on {}", tick, settings.replica());
    }
}
