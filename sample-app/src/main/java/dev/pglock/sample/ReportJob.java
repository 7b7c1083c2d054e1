package dev.pglock.sample;

import dev.pglock.spring.DistributedLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
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

    ReportJob(JdbcTemplate jdbc, SampleSettings settings) {
        this.jdbc = jdbc;
        this.settings = settings;
    }

    @Scheduled(cron = "${sample.tick-cron:* * * * * *}")
    @DistributedLock(holdAtLeast = "${sample.tick-hold:800ms}")
    public void tick() {
        // The tick is named by the database clock's nearest second, so replicas agree on it.
        Long tick = jdbc.queryForObject("INSERT INTO sample_tick (run_id, tick, replica)"
                + " VALUES (?, round(extract(epoch FROM clock_timestamp())), ?) RETURNING tick", Long.class,
                settings.runId(), settings.replica());
        log.info("tick {} ran on {}", tick, settings.replica());
    }
}
