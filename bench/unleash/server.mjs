// Unleash server for bench/flags.sh (part 1): unleash-server from this
// folder's package.json on the PostgreSQL the script started.  Everything
// comes from the environment the script sets:
//   UNLEASH_PORT, PGPORT, PGUSER, PGDATABASE            where to listen / the database
//   INIT_ADMIN_API_TOKENS, INIT_FRONTEND_API_TOKENS      read by unleash-server itself
// Defaults are kept except: request logging at warn, no version check or
// telemetry, and the per-minute rate limits on /api/frontend (20,000 a minute
// by default, i.e. 333 req/s, answered 429 beyond) raised so the benchmark
// measures evaluation, not the limiter.
import { start } from 'unleash-server';

const env = (k) => {
	if (!process.env[k]) {
		console.error(`unleash server.mjs: ${k} is not set`);
		process.exit(2);
	}
	return process.env[k];
};

await start({
	db: {
		host: '127.0.0.1',
		port: Number(env('PGPORT')),
		user: env('PGUSER'),
		password: '',
		database: env('PGDATABASE'),
		ssl: false,
	},
	server: { host: '127.0.0.1', port: Number(env('UNLEASH_PORT')) },
	logLevel: 'warn',
	versionCheck: { enable: false },
	sendTelemetry: false,
	rateLimiting: {
		tokenAuthenticationMaxPerMinute: 1000000000,
		sdkApiMaxPerMinute: 1000000000,
	},
});
console.log('unleash started');
