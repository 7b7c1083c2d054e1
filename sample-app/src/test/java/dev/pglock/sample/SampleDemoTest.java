package dev.pglock.sample;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.test.PgTestDatabase;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** Runs the README's first command (the demo, through main's own path) briefly against the real database. */
class SampleDemoTest {

    @Test
    void theDemoFindsExclusivityInBothModesAndExitsZero() {
        PgTestDatabase db = PgTestDatabase.get();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();

        int code = SampleApplication.run(new String[] {"--demo", "--demo.replicas=2", "--demo.seconds=3",
                "--demo.invoices=12", "--spring.datasource.url=" + db.jdbcUrl(),
                "--spring.datasource.username=" + db.user(), "--spring.datasource.password=" + db.password()},
                print(out), print(err));

        String table = out.toString(StandardCharsets.UTF_8);
        assertThat(code).as(table + err.toString(StandardCharsets.UTF_8)).isZero();
        assertThat(table).contains("mode advisory: 2 replicas", "mode lease: 2 replicas")
                .contains("invoices paid .............. 12 of 12")
                .contains("double payments ............ 0 ")
                .contains("Exclusivity held in both modes.");
        assertThat(table.split("verdict .................... exclusive\n", -1)).hasSize(3);
    }

    @Test
    void anUnreachableDatabaseIsOneParagraphAndExitCodeTwo() {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();

        int code = SampleApplication.run(new String[] {"--demo",
                "--spring.datasource.url=jdbc:postgresql://127.0.0.1:1/nowhere"}, print(out), print(err));

        assertThat(code).isEqualTo(2);
        String message = err.toString(StandardCharsets.UTF_8);
        assertThat(message).contains("cannot reach the PostgreSQL you named", "127.0.0.1:1/nowhere",
                "SPRING_DATASOURCE_USERNAME").doesNotContain("\tat ");
        assertThat(out.toString(StandardCharsets.UTF_8)).isEmpty();
    }

    private static PrintStream print(ByteArrayOutputStream target) {
        return new PrintStream(target, true, StandardCharsets.UTF_8);
    }
}
