package dev.pglock.sample;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.pglock.test.PgTestDatabase;
import java.util.UUID;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.jdbc.core.JdbcTemplate;

/**
 * The sample is what users copy: its fencing guard must refuse a stale write (compare the token,
 * not merely store it), and the refusal must roll the whole payment back.
 */
class FencedPaymentTest {

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void aPaymentWithAStaleFencingTokenIsRefusedAndRolledBack(String mode) {
        PgTestDatabase db = PgTestDatabase.get();
        String run = "fenced-" + UUID.randomUUID();
        try (ConfigurableApplicationContext context = new SpringApplicationBuilder(SampleApplication.class)
                .profiles(mode).web(WebApplicationType.NONE).logStartupInfo(false)
                // As arguments: default properties lose to application.yml (the job would tick, in the shared namespace).
                .run("--spring.datasource.url=" + db.jdbcUrl(), "--spring.datasource.username=" + db.user(),
                        "--spring.datasource.password=" + db.password(), "--sample.run-id=" + run,
                        "--sample.tick-cron=-", "--pglock.namespace=" + run)) {
            Invoices invoices = context.getBean(Invoices.class);
            JdbcTemplate jdbc = context.getBean(JdbcTemplate.class);
            invoices.create(2);
            // A newer holder of invoice 1's lock has already written (a token no acquisition here reaches).
            jdbc.update("UPDATE sample_invoice SET fencing_token = ? WHERE run_id = ? AND id = 1", Long.MAX_VALUE, run);

            assertThatThrownBy(() -> invoices.pay(1)).isInstanceOf(Invoices.StaleLockException.class)
                    .hasMessageContaining("invoice 1");
            assertThat(jdbc.queryForObject("SELECT count(*) FROM sample_payment WHERE run_id = ?", Integer.class, run))
                    .as("the payment was rolled back with the refused write").isZero();
            assertThat(invoices.pay(2)).as("a current token writes").isTrue();
        }
    }
}
