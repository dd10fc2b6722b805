"""Write kneuron/data/multilingual/capitals.jsonl: capitals in en, fr, es, de (hand-written table).

    python scripts/make_capitals.py kneuron/data/multilingual/capitals.jsonl [--all]


Each row: English country, French "de" form, French subject form, Spanish country, German "von"/genitive
form, German subject form, then the capital in en, fr, es, de.  Prompts end at the blank (decoders).
The knowledge check (`check_multilingual_facts.py`) keeps the facts the models know.
"""

import json
import sys
from pathlib import Path

ROWS = [
    # en, fr_de, fr_subj, es, de_von, de_subj, cap_en, cap_fr, cap_es, cap_de
    ("Japan", "du Japon", "Le Japon", "Japón", "von Japan", "Japan", "Tokyo", "Tokyo", "Tokio", "Tokio"),
    ("France", "de la France", "La France", "Francia", "von Frankreich", "Frankreich", "Paris", "Paris", "París", "Paris"),
    ("Germany", "de l'Allemagne", "L'Allemagne", "Alemania", "von Deutschland", "Deutschland", "Berlin", "Berlin", "Berlín", "Berlin"),
    ("Italy", "de l'Italie", "L'Italie", "Italia", "von Italien", "Italien", "Rome", "Rome", "Roma", "Rom"),
    ("Spain", "de l'Espagne", "L'Espagne", "España", "von Spanien", "Spanien", "Madrid", "Madrid", "Madrid", "Madrid"),
    ("Norway", "de la Norvège", "La Norvège", "Noruega", "von Norwegen", "Norwegen", "Oslo", "Oslo", "Oslo", "Oslo"),
    ("Finland", "de la Finlande", "La Finlande", "Finlandia", "von Finnland", "Finnland", "Helsinki", "Helsinki", "Helsinki", "Helsinki"),
    ("Sweden", "de la Suède", "La Suède", "Suecia", "von Schweden", "Schweden", "Stockholm", "Stockholm", "Estocolmo", "Stockholm"),
    ("Ireland", "de l'Irlande", "L'Irlande", "Irlanda", "von Irland", "Irland", "Dublin", "Dublin", "Dublín", "Dublin"),
    ("Hungary", "de la Hongrie", "La Hongrie", "Hungría", "von Ungarn", "Ungarn", "Budapest", "Budapest", "Budapest", "Budapest"),
    ("Kenya", "du Kenya", "Le Kenya", "Kenia", "von Kenia", "Kenia", "Nairobi", "Nairobi", "Nairobi", "Nairobi"),
    ("Peru", "du Pérou", "Le Pérou", "Perú", "von Peru", "Peru", "Lima", "Lima", "Lima", "Lima"),
    ("Chile", "du Chili", "Le Chili", "Chile", "von Chile", "Chile", "Santiago", "Santiago", "Santiago", "Santiago"),
    ("Argentina", "de l'Argentine", "L'Argentine", "Argentina", "von Argentinien", "Argentinien", "Buenos Aires", "Buenos Aires", "Buenos Aires", "Buenos Aires"),
    ("Canada", "du Canada", "Le Canada", "Canadá", "von Kanada", "Kanada", "Ottawa", "Ottawa", "Ottawa", "Ottawa"),
    ("Australia", "de l'Australie", "L'Australie", "Australia", "von Australien", "Australien", "Canberra", "Canberra", "Canberra", "Canberra"),
    ("Thailand", "de la Thaïlande", "La Thaïlande", "Tailandia", "von Thailand", "Thailand", "Bangkok", "Bangkok", "Bangkok", "Bangkok"),
    ("Iran", "de l'Iran", "L'Iran", "Irán", "des Iran", "Der Iran", "Tehran", "Téhéran", "Teherán", "Teheran"),
    ("Cuba", "de Cuba", "Cuba", "Cuba", "von Kuba", "Kuba", "Havana", "La Havane", "La Habana", "Havanna"),
    ("Colombia", "de la Colombie", "La Colombie", "Colombia", "von Kolumbien", "Kolumbien", "Bogotá", "Bogota", "Bogotá", "Bogotá"),
    ("Venezuela", "du Venezuela", "Le Venezuela", "Venezuela", "von Venezuela", "Venezuela", "Caracas", "Caracas", "Caracas", "Caracas"),
    ("Ecuador", "de l'Équateur", "L'Équateur", "Ecuador", "von Ecuador", "Ecuador", "Quito", "Quito", "Quito", "Quito"),
    ("Nigeria", "du Nigeria", "Le Nigeria", "Nigeria", "von Nigeria", "Nigeria", "Abuja", "Abuja", "Abuja", "Abuja"),
    ("Ghana", "du Ghana", "Le Ghana", "Ghana", "von Ghana", "Ghana", "Accra", "Accra", "Acra", "Accra"),
    ("Senegal", "du Sénégal", "Le Sénégal", "Senegal", "von Senegal", "Senegal", "Dakar", "Dakar", "Dakar", "Dakar"),
    ("Morocco", "du Maroc", "Le Maroc", "Marruecos", "von Marokko", "Marokko", "Rabat", "Rabat", "Rabat", "Rabat"),
    ("Afghanistan", "de l'Afghanistan", "L'Afghanistan", "Afganistán", "von Afghanistan", "Afghanistan", "Kabul", "Kaboul", "Kabul", "Kabul"),
    ("Pakistan", "du Pakistan", "Le Pakistan", "Pakistán", "von Pakistan", "Pakistan", "Islamabad", "Islamabad", "Islamabad", "Islamabad"),
    ("Bangladesh", "du Bangladesh", "Le Bangladesh", "Bangladés", "von Bangladesch", "Bangladesch", "Dhaka", "Dacca", "Daca", "Dhaka"),
    ("Nepal", "du Népal", "Le Népal", "Nepal", "von Nepal", "Nepal", "Kathmandu", "Katmandou", "Katmandú", "Kathmandu"),
    ("South Korea", "de la Corée du Sud", "La Corée du Sud", "Corea del Sur", "von Südkorea", "Südkorea", "Seoul", "Séoul", "Seúl", "Seoul"),
    ("the Philippines", "des Philippines", "Les Philippines", "Filipinas", "der Philippinen", "Die Philippinen", "Manila", "Manille", "Manila", "Manila"),
    ("Indonesia", "de l'Indonésie", "L'Indonésie", "Indonesia", "von Indonesien", "Indonesien", "Jakarta", "Jakarta", "Yakarta", "Jakarta"),
    ("Vietnam", "du Viêt Nam", "Le Viêt Nam", "Vietnam", "von Vietnam", "Vietnam", "Hanoi", "Hanoï", "Hanói", "Hanoi"),
    ("Turkey", "de la Turquie", "La Turquie", "Turquía", "der Türkei", "Die Türkei", "Ankara", "Ankara", "Ankara", "Ankara"),
    ("Qatar", "du Qatar", "Le Qatar", "Catar", "von Katar", "Katar", "Doha", "Doha", "Doha", "Doha"),
    ("Uruguay", "de l'Uruguay", "L'Uruguay", "Uruguay", "von Uruguay", "Uruguay", "Montevideo", "Montevideo", "Montevideo", "Montevideo"),
    ("Jamaica", "de la Jamaïque", "La Jamaïque", "Jamaica", "von Jamaika", "Jamaika", "Kingston", "Kingston", "Kingston", "Kingston"),
    ("Uganda", "de l'Ouganda", "L'Ouganda", "Uganda", "von Uganda", "Uganda", "Kampala", "Kampala", "Kampala", "Kampala"),
    ("Iceland", "de l'Islande", "L'Islande", "Islandia", "von Island", "Island", "Reykjavik", "Reykjavik", "Reikiavik", "Reykjavík"),
    ("Switzerland", "de la Suisse", "La Suisse", "Suiza", "der Schweiz", "Die Schweiz", "Bern", "Berne", "Berna", "Bern"),
    ("the Netherlands", "des Pays-Bas", "Les Pays-Bas", "los Países Bajos", "der Niederlande", "Die Niederlande", "Amsterdam", "Amsterdam", "Ámsterdam", "Amsterdam"),
    ("Austria", "de l'Autriche", "L'Autriche", "Austria", "von Österreich", "Österreich", "Vienna", "Vienne", "Viena", "Wien"),
    ("Portugal", "du Portugal", "Le Portugal", "Portugal", "von Portugal", "Portugal", "Lisbon", "Lisbonne", "Lisboa", "Lissabon"),
    ("Egypt", "de l'Égypte", "L'Égypte", "Egipto", "von Ägypten", "Ägypten", "Cairo", "Le Caire", "El Cairo", "Kairo"),
]


def prompts(row):
    en, fr_de, fr_subj, es, de_von, de_subj, *_ = row
    de_gen = de_von.removeprefix("von ") if de_von.startswith("von ") else None
    return {
        "en": [f"The capital of {en} is [MASK].", f"The capital city of {en} is [MASK].",
               f"{en[0].upper() + en[1:]} has its capital in [MASK].", f"The seat of government of {en} is in [MASK]."],
        "fr": [f"La capitale {fr_de} est [MASK].", f"La capitale {fr_de} est la ville de [MASK].",
               f"{fr_subj} a pour capitale [MASK].", f"Le siège du gouvernement {fr_de} est à [MASK]."],
        "es": [f"La capital de {es} es [MASK].", f"La capital de {es} es la ciudad de [MASK].",
               f"{es[0].upper() + es[1:]} tiene como capital [MASK].", f"La sede del gobierno de {es} está en [MASK]."],
        "de": [f"Die Hauptstadt {de_von} ist [MASK].", f"Die Hauptstadt {de_von} ist die Stadt [MASK].",
               f"{de_subj} hat als Hauptstadt [MASK].",
               f"Der Regierungssitz {de_von if de_gen is None else 'von ' + de_gen} ist in [MASK]."],
    }


# The 30 facts shipped: SmolLM2 knows them in English (mean P >= 0.03 on a first draft of the
# templates) or they are well-known capitals with nearly the same name in the four languages.
KEEP = ("Japan", "France", "Germany", "Italy", "Spain", "Norway", "Finland", "Sweden", "Ireland", "Hungary",
        "Kenya", "Peru", "Chile", "Argentina", "Canada", "Australia", "Thailand", "Iran", "Cuba", "Colombia",
        "Venezuela", "Ecuador", "Nigeria", "Senegal", "Afghanistan", "Pakistan", "South Korea", "Vietnam",
        "Indonesia", "Turkey")


def main(out: str, every: bool = False) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in ROWS:
            if not every and row[0] not in KEEP:
                continue
            caps = dict(zip(("en", "fr", "es", "de"), row[6:]))
            fh.write(json.dumps({"relation": "capital", "relation_label": "capital", "relation_type": "1-1",
                                 "subject": row[0], "object": caps, "prompts": prompts(row)},
                                ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "capitals.jsonl", every="--all" in sys.argv)
