"""A small labelled set in plain English for the quality gate (``spec.rollout.quality.set``).

Ten queries, six candidate documents each, graded relevance 0-3 (3: answers the query, 2: on the
subject, 1: related, 0: another subject). Real MiniLM weights rank it well (nDCG@5 near 1), so a
version that ranks worse — ``minilm-noisy`` in ``devtools/testmodels.py`` — shows as a clear drop.
The gate in the demo and the real-pod test: :data:`QUALITY_GATE`.
"""

from __future__ import annotations

from typing import Any

# (query, [(document, grade), ...])
_CASES: list[tuple[str, list[tuple[str, int]]]] = [
    (
        "how do vaccines protect against disease",
        [
            ("Vaccines train the immune system to recognise a pathogen so it can fight infection later.", 3),
            ("Immunisation programmes have reduced measles cases in many countries.", 2),
            ("Antibiotics treat bacterial infections but do not work against viruses.", 1),
            ("The stock market fell sharply after the interest rate announcement.", 0),
            ("Tomatoes grow best in warm weather with plenty of sunlight.", 0),
            ("The orchestra played a symphony by Beethoven last night.", 0),
        ],
    ),
    (
        "best way to store fresh bread",
        [
            ("Keep bread in a paper bag at room temperature, or freeze slices to keep them fresh.", 3),
            ("Bread goes stale faster in the refrigerator than on the counter.", 2),
            ("Sourdough is made with a fermented starter of flour and water.", 1),
            ("The new smartphone has a larger battery and a faster processor.", 0),
            ("Glaciers are retreating as global temperatures rise.", 0),
            ("The court ruled in favour of the defendant.", 0),
        ],
    ),
    (
        "why is the sky blue",
        [
            ("Sunlight is scattered by air molecules, and blue light scatters more than red light.", 3),
            ("Rayleigh scattering makes short wavelengths dominate the colour of the daytime sky.", 3),
            ("Sunsets look red because light travels through more atmosphere.", 2),
            ("The ocean covers about seventy percent of the Earth's surface.", 0),
            ("He painted the kitchen walls a pale shade of yellow.", 0),
            ("Our quarterly revenue grew by twelve percent.", 0),
        ],
    ),
    (
        "symptoms of dehydration",
        [
            ("Thirst, dark urine, dizziness and fatigue are common signs of dehydration.", 3),
            ("Drinking water regularly during exercise helps prevent fluid loss.", 2),
            ("Heat stroke can occur when the body overheats in hot weather.", 1),
            ("The train to Paris departs every hour from the central station.", 0),
            ("Chess players often study famous openings.", 0),
            ("The company released a new version of its accounting software.", 0),
        ],
    ),
    (
        "how to learn a programming language quickly",
        [
            ("Write small programs every day and read other people's code to learn a language fast.", 3),
            ("Online tutorials and coding exercises help beginners practise Python.", 2),
            ("Compilers translate source code into machine instructions.", 1),
            ("The hikers reached the summit just before sunset.", 0),
            ("Olive oil is a staple of Mediterranean cooking.", 0),
            ("The museum opened a new exhibition of ancient pottery.", 0),
        ],
    ),
    (
        "causes of inflation",
        [
            ("Inflation rises when demand outpaces supply or when money supply grows too quickly.", 3),
            ("Central banks raise interest rates to bring rising prices under control.", 2),
            ("Wages and energy costs feed into the prices of consumer goods.", 2),
            ("The cat slept on the windowsill all afternoon.", 0),
            ("Volcanic eruptions can send ash high into the atmosphere.", 0),
            ("She won the tennis tournament in straight sets.", 0),
        ],
    ),
    (
        "how do plants make food",
        [
            ("Plants use photosynthesis to turn sunlight, water and carbon dioxide into sugar.", 3),
            ("Chlorophyll in leaves absorbs light energy.", 2),
            ("Roots take up water and minerals from the soil.", 1),
            ("The airline cancelled several flights because of the storm.", 0),
            ("The novel tells the story of a family across three generations.", 0),
            ("Electric cars need fewer maintenance visits than petrol cars.", 0),
        ],
    ),
    (
        "tips for a good night's sleep",
        [
            ("Keep a regular bedtime, avoid screens before bed and keep the bedroom dark and cool.", 3),
            ("Caffeine late in the day can make it harder to fall asleep.", 2),
            ("Adults need around seven to nine hours of sleep each night.", 2),
            ("The bridge was closed for repairs over the weekend.", 0),
            ("Penguins live mostly in the Southern Hemisphere.", 0),
            ("The spreadsheet calculates totals automatically.", 0),
        ],
    ),
    (
        "what causes earthquakes",
        [
            ("Earthquakes happen when tectonic plates slip suddenly along a fault and release energy.", 3),
            ("Seismographs measure the shaking of the ground during a quake.", 2),
            ("Tsunamis can be triggered by earthquakes under the sea.", 1),
            ("The bakery sells croissants and fresh coffee every morning.", 0),
            ("The team signed a new striker before the transfer deadline.", 0),
            ("She knitted a warm scarf for the winter.", 0),
        ],
    ),
    (
        "benefits of regular exercise",
        [
            ("Regular exercise strengthens the heart, improves mood and helps control weight.", 3),
            ("Walking thirty minutes a day lowers the risk of heart disease.", 2),
            ("Stretching before a run can reduce muscle stiffness.", 1),
            ("The printer ran out of ink in the middle of the report.", 0),
            ("The river flooded the valley after days of heavy rain.", 0),
            ("The film won an award for its cinematography.", 0),
        ],
    ),
]

QUALITY_SET: list[dict[str, Any]] = [
    {"query": q, "documents": [d for d, _ in docs], "relevance": [float(g) for _, g in docs]}
    for q, docs in _CASES
]

# The gate the demo and the real-pod test use: nDCG@5, at most 0.05 below the current version.
QUALITY_GATE: dict[str, Any] = {"set": QUALITY_SET, "metric": "ndcg", "k": 5, "maxDrop": 0.05}

# A one-document canary that any model loading at all passes (what the gate is there to look past).
ONE_CASE_CANARY: dict[str, Any] = {
    "query": "how do vaccines protect against disease",
    "documents": ["Vaccines train the immune system to recognise a pathogen."],
    "expectTop": 0,
}
