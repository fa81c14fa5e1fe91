"""Client frames recorded from the real HEAD SDK (0.11.3) against the HEAD reference hub
(``../shared/transcripts/head-sdk-token.jsonl`` and ``head-sdk-notoken.jsonl``, see that README): the
exact text frames stage-web (conn 1) and stage-tamagotchi (conn 2) sent, for the replay tests in
tests/test_head_mixed.py. Wire data, not code."""

from __future__ import annotations

TOKEN = 's3cret'

#: head-sdk-token.jsonl: [conn 1 frames], [conn 2 frames] in order (auth, announce, events)
TOKEN_WEB = [
    '{"json":{"type":"module:authenticate","data":{"token":"s3cret"},"metadata":{"source":{"kind":"plugin","id":"mx2zksdp-ygouhb","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zkse7-myvdgzp6"}}}}',
    '{"json":{"type":"extension:module:announce","data":{"name":"proj-airi:stage-web","identity":{"id":"mx2zksdp-ygouhb","extension":{"id":"proj-airi:stage-web"}},"possibleEvents":["head-sdk-check:custom","head-sdk-check:routed"],"configSchema":null,"dependencies":[]},"metadata":{"source":{"kind":"plugin","id":"mx2zksdp-ygouhb","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zkseg-fd3a0tjl"}}},"meta":{"values":{"data.configSchema":["undefined"]},"referentialEqualities":{"data.identity.extension":["metadata.source.extension"]},"v":1}}',
    '{"json":{"type":"head-sdk-check:custom","data":{"from":"proj-airi:stage-web","hello":"from-head-sdk","at":"2026-11-30T08:08:36.056Z","nothing":null},"metadata":{"source":{"kind":"plugin","id":"mx2zksdp-ygouhb","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zksew-4yugwo1j"}}},"meta":{"values":{"data.at":["Date"],"data.nothing":["undefined"]},"v":1}}',
    '{"json":{"type":"head-sdk-check:routed","data":{"from":"proj-airi:stage-web","at":"2026-11-30T08:08:36.057Z"},"route":{"destinations":[{"type":"module","modules":["proj-airi:stage-tamagotchi"]}]},"metadata":{"source":{"kind":"plugin","id":"mx2zksdp-ygouhb","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zksex-moi6n9jb"}}},"meta":{"values":{"data.at":["Date"]},"v":1}}',
]
TOKEN_TAMAGOTCHI = [
    '{"json":{"type":"module:authenticate","data":{"token":"s3cret"},"metadata":{"source":{"kind":"plugin","id":"mx2zksdt-ysmx27","extension":{"id":"proj-airi:stage-tamagotchi"},"plugin":{"id":"proj-airi:stage-tamagotchi"}},"event":{"id":"mx2zkse9-aht80y2r"}}}}',
    '{"json":{"type":"extension:module:announce","data":{"name":"proj-airi:stage-tamagotchi","identity":{"id":"mx2zksdt-ysmx27","extension":{"id":"proj-airi:stage-tamagotchi"}},"possibleEvents":["head-sdk-check:custom","head-sdk-check:routed"],"configSchema":null,"dependencies":[]},"metadata":{"source":{"kind":"plugin","id":"mx2zksdt-ysmx27","extension":{"id":"proj-airi:stage-tamagotchi"},"plugin":{"id":"proj-airi:stage-tamagotchi"}},"event":{"id":"mx2zksek-xke9lgd3"}}},"meta":{"values":{"data.configSchema":["undefined"]},"referentialEqualities":{"data.identity.extension":["metadata.source.extension"]},"v":1}}',
]
#: head-sdk-notoken.jsonl (announce, events)
NOTOKEN_WEB = [
    '{"json":{"type":"extension:module:announce","data":{"name":"proj-airi:stage-web","identity":{"id":"mx2zktua-rdpj0b","extension":{"id":"proj-airi:stage-web"}},"possibleEvents":["head-sdk-check:custom","head-sdk-check:routed"],"configSchema":null,"dependencies":[]},"metadata":{"source":{"kind":"plugin","id":"mx2zktua-rdpj0b","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zktuu-u81kcnaz"}}},"meta":{"values":{"data.configSchema":["undefined"]},"referentialEqualities":{"data.identity.extension":["metadata.source.extension"]},"v":1}}',
    '{"json":{"type":"head-sdk-check:custom","data":{"from":"proj-airi:stage-web","hello":"from-head-sdk","at":"2026-11-30T08:08:37.942Z","nothing":null},"metadata":{"source":{"kind":"plugin","id":"mx2zktua-rdpj0b","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zktva-af31pbd9"}}},"meta":{"values":{"data.at":["Date"],"data.nothing":["undefined"]},"v":1}}',
    '{"json":{"type":"head-sdk-check:routed","data":{"from":"proj-airi:stage-web","at":"2026-11-30T08:08:37.942Z"},"route":{"destinations":[{"type":"module","modules":["proj-airi:stage-tamagotchi"]}]},"metadata":{"source":{"kind":"plugin","id":"mx2zktua-rdpj0b","extension":{"id":"proj-airi:stage-web"},"plugin":{"id":"proj-airi:stage-web"}},"event":{"id":"mx2zktva-3i0zpz5d"}}},"meta":{"values":{"data.at":["Date"]},"v":1}}',
]
NOTOKEN_TAMAGOTCHI = [
    '{"json":{"type":"extension:module:announce","data":{"name":"proj-airi:stage-tamagotchi","identity":{"id":"mx2zktue-t89cbf","extension":{"id":"proj-airi:stage-tamagotchi"}},"possibleEvents":["head-sdk-check:custom","head-sdk-check:routed"],"configSchema":null,"dependencies":[]},"metadata":{"source":{"kind":"plugin","id":"mx2zktue-t89cbf","extension":{"id":"proj-airi:stage-tamagotchi"},"plugin":{"id":"proj-airi:stage-tamagotchi"}},"event":{"id":"mx2zktux-jnh5qcev"}}},"meta":{"values":{"data.configSchema":["undefined"]},"referentialEqualities":{"data.identity.extension":["metadata.source.extension"]},"v":1}}',
]
