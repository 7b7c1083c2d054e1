package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockObserver;
import dev.pglock.spring.DistributedLockAdvisor;
import dev.pglock.spring.LockDefaults;
import dev.pglock.spring.LockOperations;
import dev.pglock.spring.LockTemplate;
import java.time.Duration;
import java.util.List;
import javax.sql.DataSource;
import org.springframework.aop.Advisor;
import org.springframework.aop.config.AopConfigUtils;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.config.BeanDefinition;
import org.springframework.beans.factory.support.BeanDefinitionRegistry;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnSingleCandidate;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.sql.init.dependency.DependsOnDatabaseInitialization;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.ImportBeanDefinitionRegistrar;
import org.springframework.context.annotation.Role;
import org.springframework.core.env.Environment;
import org.springframework.core.type.AnnotationMetadata;

/**
 * Builds pglock from {@code pglock.*}: the lock client on the application's DataSource (or the one
 * marked {@link PgLockDataSource}), a {@link LockTemplate}, and the advisors that apply
 * {@code @DistributedLock}. Every bean backs off when the application defines one of its type
 * ({@link LockClient}, {@link LockOperations}, {@link DistributedLockAdvisor}); bean names start with
 * {@code pgLock}. The lock client is created after database initialization (schema scripts, Flyway,
 * Liquibase), so a lease table created by a migration exists when it starts. It registers an
 * auto-proxy creator if the application has none ({@code spring.aop.auto=false}, no transaction
 * management), so {@code @DistributedLock} always applies. {@code pglock.enabled=false} turns it all
 * off, with one warning.
 */
@AutoConfiguration(after = DataSourceAutoConfiguration.class, afterName = {
        "org.springframework.boot.jdbc.autoconfigure.DataSourceTransactionManagerAutoConfiguration",
        "org.springframework.boot.transaction.autoconfigure.TransactionAutoConfiguration",
        "org.springframework.boot.autoconfigure.aop.AopAutoConfiguration"})
@ConditionalOnClass({LockClient.class, DataSource.class})
@ConditionalOnPgLockSwitch(name = "pglock.enabled", ifMissing = true)
@EnableConfigurationProperties(PgLockProperties.class)
@Import(PgLockAutoConfiguration.AutoProxying.class)
public final class PgLockAutoConfiguration {

    @Bean
    @ConditionalOnMissingBean
    @ConditionalOnBean(DataSource.class)
    @DependsOnDatabaseInitialization
    PgLockClients pgLockClients(PgLockProperties properties, @PgLockDataSource ObjectProvider<DataSource> lockDataSource,
            ObjectProvider<DataSource> dataSource, Environment environment, ObjectProvider<LockObserver> observers) {
        PgLockPropertiesValidator.validate(properties);
        // Running work gets most of the shutdown phase to release its locks; the rest is for closing.
        Duration phase = Binder.get(environment).bind("spring.lifecycle.timeout-per-shutdown-phase", Duration.class)
                .orElse(Duration.ofSeconds(30));
        List<LockObserver> all = observers.orderedStream().toList();
        PgLockClients clients = new PgLockClients(properties,
                lockDataSource.getIfAvailable(() -> applicationDataSource(dataSource)), phase.multipliedBy(9).dividedBy(10))
                .observer(CompositeLockObserver.of(all));
        for (LockObserver observer : all) {
            if (observer instanceof LockClientBinder binder) { // PgLockMetrics, without loading Micrometer here
                clients.onClientBuilt(binder::bind);
            }
        }
        return clients;
    }

    /** The application's one DataSource, or a start-up failure that says how to choose. */
    private static DataSource applicationDataSource(ObjectProvider<DataSource> dataSources) {
        DataSource unique = dataSources.getIfUnique();
        if (unique != null) {
            return unique;
        }
        List<DataSource> all = dataSources.orderedStream().toList();
        throw new IllegalStateException("pglock needs one DataSource for its locks and found " + all.size()
                + " DataSource beans, none of them primary: mark the application's main one @Primary, or mark the"
                + " one for locks @PgLockDataSource (dev.pglock.spring.boot.autoconfigure.PgLockDataSource)");
    }

    @Bean(destroyMethod = "") // PgLockClients closes it
    @ConditionalOnMissingBean(LockClient.class)
    @ConditionalOnSingleCandidate(PgLockClients.class)
    LockClient pgLockClient(PgLockClients clients, PgLockProperties properties) {
        return clients.get(properties.getMode());
    }

    @Bean
    @ConditionalOnMissingBean(LockOperations.class)
    @ConditionalOnSingleCandidate(LockClient.class)
    LockTemplate pgLockTemplate(LockClient client, ObjectProvider<PgLockClients> clients, PgLockProperties properties) {
        PgLockClients known = clients.getIfUnique();
        // The DataSource whose transaction a lock in the transaction joins: only a client built on it.
        // An application's own client may lock on another database, where a transaction lock taken
        // on this one would exclude nobody: the template then refuses locks in the transaction.
        DataSource dataSource = known != null && known.built().contains(unwrapped(client)) ? known.dataSource() : null;
        return new LockTemplate(client, mode -> clients.getObject().get(mode), properties.getWait(),
                properties.getHoldAtLeast(), dataSource);
    }

    /** The client a Spring AOP proxy (tracing, metrics) wraps, or the client itself. */
    private static Object unwrapped(LockClient client) {
        Object target = client;
        for (Object inner; (inner = org.springframework.aop.framework.AopProxyUtils.getSingletonTarget(target)) != null; ) {
            target = inner;
        }
        return target;
    }

    /** Static and lazy about the template, so that creating it touches no DataSource. */
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    @ConditionalOnMissingBean
    static DistributedLockAdvisor pgLockDistributedLockAdvisor(ObjectProvider<LockTemplate> templates,
            Environment environment) {
        // Bound and checked here rather than injected: this infrastructure bean is created before the
        // others, so a wrong property is reported as itself, before any annotation is checked against it.
        PgLockProperties p = PgLockPropertiesValidator.bindAndValidate(environment);
        LockDefaults defaults = new LockDefaults(p.getMode(), p.getWait(), p.getLease(), p.getHoldAtLeast(),
                p.getHeartbeatInterval(), p.getScheduled().getWait(), p.getScheduled().getHoldAtLeast());
        return new DistributedLockAdvisor(templates, defaults, p.getAspectOrder());
    }

    /** The advisor inside {@code @Transactional}: locks that join the transaction, checks before commit. */
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    static Advisor pgLockTransactionAdvisor(DistributedLockAdvisor advisor) {
        return advisor.transactionAdvisor();
    }

    /**
     * Makes sure some auto-proxy creator applies the advisors: with {@code spring.aop.auto=false} and
     * no transaction management there would be none, and every {@code @DistributedLock} would be
     * silently ignored. An existing creator (AspectJ-aware, or the transaction one) is kept.
     */
    static final class AutoProxying implements ImportBeanDefinitionRegistrar {
        @Override
        public void registerBeanDefinitions(AnnotationMetadata metadata, BeanDefinitionRegistry registry) {
            AopConfigUtils.registerAutoProxyCreatorIfNecessary(registry);
        }
    }
}
