package dev.pglock.spring;

import static org.assertj.core.api.Assertions.assertThat;

import com.example.billing.BillingApplication;
import com.example.billing.Payments;
import com.example.billing.ReportJob;
import dev.pglock.core.LockClient;
import dev.pglock.test.PgTestDatabase;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * Issue 15, point 6: the README's Spring Boot quick start is these files (src/test/java/com/example/billing),
 * compiled by this build and run here as two replicas, so it cannot rot. Each README block marked
 * {@code <!-- quick start: PATH -->} must equal its file.
 */
class QuickStartTest {

    private static final Pattern BLOCK = Pattern.compile("<!-- quick start: (\\S+) -->\\s*```java\\n(.*?)```", Pattern.DOTALL);
    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String schema = PgTestDatabase.uniqueName("quickstart");
    private final List<ConfigurableApplicationContext> replicas = new ArrayList<>();

    @Test
    void everyQuickStartBlockOfTheReadmeIsTheCompiledFile() throws IOException {
        String readme = Files.readString(Path.of("..", "README.md"));
        Matcher blocks = BLOCK.matcher(readme);
        List<String> files = new ArrayList<>();
        while (blocks.find()) {
            Path file = Path.of(blocks.group(1));
            assertThat(blocks.group(2)).as("README block for " + file).isEqualTo(Files.readString(file));
            files.add(file.getFileName().toString());
        }
        assertThat(files).containsExactlyInAnyOrder("BillingApplication.java", "ReportJob.java", "Payments.java");
    }

    @Test
    void theQuickStartRunsAsTwoReplicas() throws Exception {
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("CREATE SCHEMA " + schema);
            st.execute("CREATE TABLE " + schema + ".invoice (id bigint PRIMARY KEY, paid boolean NOT NULL DEFAULT false,"
                    + " fencing_token bigint NOT NULL DEFAULT 0)");
            st.execute("INSERT INTO " + schema + ".invoice (id) VALUES (1), (2)");
        }
        ConfigurableApplicationContext a = replica();
        ConfigurableApplicationContext b = replica();

        assertThat(a.getBean(Payments.class).pay(1)).isTrue();
        assertThat(b.getBean(Payments.class).pay(1)).as("paid once, whichever replica is asked").isFalse();
        assertThat(b.getBean(Payments.class).pay(2)).isTrue();

        a.getBean(ReportJob.class).run();
        assertThat(b.getBean(LockClient.class).get("com.example.billing.ReportJob.run()"))
                .as("kept 20 s by hold-at-least: replica B's tick skips").isPresent();
    }

    private ConfigurableApplicationContext replica() {
        String url = db.jdbcUrl() + (db.jdbcUrl().contains("?") ? "&" : "?") + "currentSchema=" + schema;
        ConfigurableApplicationContext context = new SpringApplicationBuilder(BillingApplication.class)
                .web(WebApplicationType.NONE).logStartupInfo(false)
                .properties("spring.datasource.url=" + url, "spring.datasource.username=" + db.user(),
                        "spring.datasource.password=" + db.password(), "spring.flyway.enabled=false",
                        "spring.main.banner-mode=off", "pglock.namespace=" + schema,
                        "pglock.advisory.fencing-tokens=true")
                .run();
        replicas.add(context);
        return context;
    }

    @AfterEach
    void cleanUp() throws Exception {
        replicas.forEach(ConfigurableApplicationContext::close);
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
        }
    }
}
