package dev.pglock.sample;

import org.springframework.context.annotation.Profile;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.stereotype.Component;

/**
 * Demo instrumentation, not part of the pattern: records every time the job's schedule fires on this
 * replica, locked or not, so the demo can count the ticks each replica skipped.
 */
@Component
@Profile("demo")
class TickFirings {

    private final JdbcTemplate jdbc;
    private final SampleSettings settings;

    TickFirings(JdbcTemplate jdbc, SampleSettings settings) {
        this.jdbc = jdbc;
        this.settings = settings;
    }

    @Scheduled(cron = "${sample.tick-cron:* * * * * *}")
    public void fired() {
        jdbc.update("INSERT INTO sample_fire (run_id, tick, replica) VALUES (?, round(extract(epoch FROM clock_timestamp())), ?)",
                settings.runId(), settings.replica());
    }
}
