// In-process evaluation cost of unleash-client's isEnabled (bench/flags.sh,
// part 2): the toggle equivalent to bench/flags_eval.c's flag, loaded from a
// bootstrap (no server), evaluated over 1024 varied contexts where no
// constrained strategy matches, so every strategy is tried and the last one
// (the 25% gradual rollout) decides, as in the C benchmark.
//   node isenabled.cjs [ITERATIONS]   prints "unleash-client isEnabled NS ns/call"
'use strict';
const { Unleash, InMemStorageProvider } = require('unleash-client');
const toggle = require('./toggle.json');

const iterations = Number(process.argv[2] || 2000000);
const unleash = new Unleash({
	appName: 'canaryd-bench',
	url: 'http://127.0.0.1:9/api/', // nothing listens: the bootstrap is the only source
	refreshInterval: 0,
	disableMetrics: true,
	storageProvider: new InMemStorageProvider(),
	bootstrap: { data: [toggle] },
	skipInstanceCountWarning: true,
});
unleash.on('error', () => {}); // the fetch from port 9 fails, by design
unleash.on('warn', () => {});

const contexts = [];
for (let i = 0; i < 1024; i++) {
	contexts.push({
		userId: `user-${i * 7919}`,
		properties: { email: `user-${i}@example.com`, plan: 'free', beta: 'false', country: 'DE' },
	});
}

function run(n) {
	let on = 0;
	for (let i = 0; i < n; i++) if (unleash.isEnabled('bench_flag', contexts[i & 1023])) on++;
	return on;
}

const timer = setTimeout(() => {
	console.error('isenabled: the bootstrap never became ready');
	process.exit(1);
}, 10000);
unleash.once('ready', () => {
	clearTimeout(timer);
	run(200000); // warm-up: let the JIT settle
	const t0 = process.hrtime.bigint();
	const on = run(iterations);
	const ns = Number(process.hrtime.bigint() - t0) / iterations;
	const share = (100 * on) / iterations;
	if (share < 15 || share > 35) {
		console.error(`isenabled: ${share.toFixed(1)}% enabled, expected about 25%`);
		process.exit(1);
	}
	console.log(`unleash-client isEnabled ${ns.toFixed(1)} ns/call (${share.toFixed(1)}% on)`);
	unleash.destroy();
	process.exit(0);
});
